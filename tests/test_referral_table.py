"""The referral table parser: messy CSV and XLSX as attending doctors really send them,
row numbers true to the file, every bad cell reported, file-level refusals."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import date, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook

from telemed.errors import InvalidValue, Problem
from telemed.scheduling.referral_table import (
    MAX_ROWS,
    CellError,
    ReferralRow,
    parse_referral_table,
)

TODAY = date(2026, 3, 15)
SAMPLES = Path(__file__).resolve().parent.parent / "docs" / "samples"
NBSP = "\u00a0"

# A table as it arrives: shuffled Russian headers with odd spacing, a numbered "№" column
# and a notes column (both ignored), quoted cells with quotes and semicolons inside,
# non-breaking spaces, ё, an empty row in the middle, a numbered but otherwise empty row
# and empty lines at the end.
MESSY_CSV = (
    "№ п/п;Телефон; ФИО ;Профиль;Дата  рождения;Диагноз;Код МКБ-10;E-mail;"
    "Направившая организация;Направивший врач;Примечание\n"
    '1;8 (912) 345-67-89;Иванов  Иван Петрович ;кардиология;01.02.1960;"ИБС: стенокардия '
    'напряжения; ФК II";i25.1; Ivanov@Mail.RU ;"ГБУЗ СО ""Городская больница № 1"", '
    'г. Артёмовский";Петрова А. А.;\n'
    ";;;;;;;;;;\n"
    f"2;+7 922 123 45 67;Смирнова{NBSP}Ольга Николаевна;Гинекология;5.3.1975;Миома матки;"
    "D25.9;;ГАУЗ СО «ЦГБ г. Ревда»;Кузнецов И. И.;повторно\n"
    "3;12-34-56;Сидоров Павел Андреевич;терапия;14.07.1958;Гипертоническая болезнь;I11.9;;"
    "ГБУЗ СО «Полевская ЦГБ»;Орлов В. В.;\n"
    "4;89223334455;;кардиология;20.11.1949;Нарушение ритма;I49.9;;ГБУЗ СО «Полевская ЦГБ»;"
    "Орлов В. В.;\n"
    "5;9124445566;Козлов Дмитрий;терапия;01.01.2027;Хронический гастрит;K29.5;;"
    "ГБУЗ СО «Полевская ЦГБ»;Орлов В. В.;\n"
    "6;+7 912 345 67 89;Иванов Иван Петрович;КАРДИОЛОГИЯ ;1960-02-01;ибс:  стенокардия;"
    'I25.1;;"гбуз со ""городская больница №1"",  г. Артемовский";Петрова;дубль\n'
    "7;+79225556677;Фёдорова Анна Сергеевна;гинекология;30.06.1990;Бесплодие;N97.9;"
    "fedorova@mail;ГАУЗ СО «ЦГБ г. Ревда»;Кузнецов И. И.;\n"
    "8;8-912-777-88-99;Николаев Олег;кардиология;12.12.1970;Гипертония;25.1;;"
    "ГБУЗ СО «Полевская ЦГБ»;Орлов В. В.;\n"
    "9;9226667788;Семёнова Елена Викторовна;Терапия;1988-07-30;Хронический бронхит;;;"
    "ГБУЗ СО «Полевская ЦГБ»;Орлов В. В.;\n"
    "10;;;;;;;;;;\n"
    "\n"
    ";;;\n"
)

# What the messy table must give: row number → {column: message}.
MESSY_ERRORS: dict[int, dict[str, str]] = {
    2: {},
    4: {},
    5: {"phone": "not a valid phone number"},
    6: {"full_name": "required value is missing"},
    7: {"birth_date": "birth date is in the future"},
    8: {"row": "duplicate of row 2"},
    9: {"email": "not a valid e-mail address"},
    10: {"icd10": "not an ICD-10 code: a letter and two digits, like I25 or I25.1"},
    11: {},
}


def errors_by_row(rows: list[ReferralRow]) -> dict[int, dict[str, str]]:
    return {row.row: {e.column: e.message for e in row.errors} for row in rows}


def parse(text: str, *, encoding: str = "utf-8") -> list[ReferralRow]:
    return parse_referral_table(text.encode(encoding), today=TODAY)


def table(header: list[str], *rows: list[str], delimiter: str = ";") -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerows([header, *rows])
    return out.getvalue()


RU_HEADER = [
    "ФИО",
    "Дата рождения",
    "Телефон",
    "Email",
    "Код МКБ-10",
    "Диагноз",
    "Направившая организация",
    "Направивший врач",
    "Профиль",
]
GOOD = [
    "Иванов Иван Петрович",
    "01.02.1960",
    "8 (912) 345-67-89",
    "",
    "I25.1",
    "ИБС",
    "ГБУЗ СО «Городская больница № 1»",
    "Петрова А. А.",
    "кардиология",
]


def one_row(**cells: str) -> ReferralRow:
    """The good row with some cells replaced (by canonical column name)."""
    names = [
        "full_name",
        "birth_date",
        "phone",
        "email",
        "icd10",
        "diagnosis",
        "referring_organisation",
        "referring_doctor",
        "profile",
    ]
    row = [cells.get(name, value) for name, value in zip(names, GOOD, strict=True)]
    (parsed,) = parse(table(RU_HEADER, row))
    return parsed


def said(row: ReferralRow) -> list[tuple[str, str]]:
    """Each error of the row as (column, English message)."""
    return [(error.column, error.message) for error in row.errors]


@pytest.mark.parametrize(
    ("cells", "column", "code", "params"),
    [
        ({"phone": "12345"}, "phone", "bad_phone", {}),
        ({"phone": ""}, "phone", "missing", {}),
        ({"phone": "8 (343) 123-45-67"}, "phone", "not_mobile", {}),
        ({"birth_date": "01.02.85"}, "birth_date", "two_digit_year", {}),
        ({"birth_date": "31.02.1985"}, "birth_date", "no_such_date", {}),
        ({"birth_date": "вчера"}, "birth_date", "not_date", {}),
        ({"birth_date": "01.01.1800"}, "birth_date", "too_old", {"years": 130}),
        ({"icd10": "II25"}, "icd10", "bad_icd10", {}),
        ({"email": "nobody"}, "email", "bad_email", {}),
        ({"full_name": "12345"}, "full_name", "not_name", {}),
        ({"diagnosis": "д" * 1001}, "diagnosis", "too_long", {"n": 1001, "max": 1000}),
    ],
)
def test_each_cell_error_has_a_code_and_the_parameters_of_its_text(
    cells: dict[str, str], column: str, code: str, params: dict[str, object]
) -> None:
    """The web app words a cell error from its code and parameters, in the user's language."""
    (error,) = one_row(**cells).errors
    assert error.to_wire() == {
        "column": column,
        "code": code,
        "params": params,
        "message": error.message,
    }


def assert_messy_rows(rows: list[ReferralRow]) -> None:
    assert errors_by_row(rows) == MESSY_ERRORS
    first, second, *_, last = rows
    assert first == ReferralRow(
        row=2,
        full_name="Иванов Иван Петрович",
        birth_date=date(1960, 2, 1),
        phone="+79123456789",
        email="ivanov@mail.ru",
        icd10="I25.1",
        diagnosis="ИБС: стенокардия напряжения; ФК II",
        referring_organisation='ГБУЗ СО "Городская больница № 1", г. Артёмовский',
        referring_doctor="Петрова А. А.",
        profile="кардиология",
        errors=[],
    )
    assert second == ReferralRow(
        row=4,
        full_name="Смирнова Ольга Николаевна",
        birth_date=date(1975, 3, 5),
        phone="+79221234567",
        email=None,
        icd10="D25.9",
        diagnosis="Миома матки",
        referring_organisation="ГАУЗ СО «ЦГБ г. Ревда»",
        referring_doctor="Кузнецов И. И.",
        profile="Гинекология",
        errors=[],
    )
    assert last == ReferralRow(
        row=11,
        full_name="Семёнова Елена Викторовна",
        birth_date=date(1988, 7, 30),
        phone="+79226667788",
        email=None,
        icd10=None,
        diagnosis="Хронический бронхит",
        referring_organisation="ГБУЗ СО «Полевская ЦГБ»",
        referring_doctor="Орлов В. В.",
        profile="Терапия",
        errors=[],
    )
    assert [row.ok for row in rows] == [not errors for errors in MESSY_ERRORS.values()]


def test_messy_utf8_semicolon_table_row_by_row() -> None:
    rows = parse(MESSY_CSV)
    assert_messy_rows(rows)
    by_row = {row.row: row for row in rows}
    # A bad cell is None; the row's other cells are still read.
    assert by_row[5].phone is None
    assert by_row[5].full_name == "Сидоров Павел Андреевич"
    assert by_row[7].birth_date is None
    assert by_row[9].email is None
    assert by_row[9].icd10 == "N97.9"
    assert by_row[10].icd10 is None
    # The duplicate keeps its values: only the row as a whole is refused.
    assert by_row[8].phone == "+79123456789"
    assert by_row[8].key() == by_row[2].key()
    assert by_row[8].report() == {
        "row": 8,
        "ok": False,
        "errors": [
            {
                "column": "row",
                "code": "duplicate_row",
                "params": {"row": 2},
                "message": "duplicate of row 2",
            }
        ],
    }


def test_windows_1251_with_commas_and_quoted_fields() -> None:
    records = list(csv.reader(io.StringIO(MESSY_CSV, newline=""), delimiter=";"))
    out = io.StringIO()
    csv.writer(out, delimiter=",", lineterminator="\r\n").writerows(records)
    data = out.getvalue().encode("cp1251")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    # A cell with commas is quoted; one with semicolons now is not, and must stay whole.
    assert "ИБС: стенокардия напряжения; ФК II,".encode("cp1251") in data
    assert '"ГБУЗ СО ""Городская больница № 1"", г. Артёмовский"'.encode("cp1251") in data

    assert_messy_rows(parse_referral_table(data, file_name="направление.csv", today=TODAY))


def test_byte_order_mark_does_not_hide_the_first_header() -> None:
    data = b"\xef\xbb\xbf" + table(RU_HEADER, GOOD).encode()
    (row,) = parse_referral_table(data, today=TODAY)
    assert row.ok
    assert row.full_name == "Иванов Иван Петрович"


def test_english_headers_with_comma_delimiter() -> None:
    text = (
        "full_name,birth_date,phone,email,icd10,diagnosis,referring_organisation,"
        "referring_doctor,profile\n"
        "Maria Ivanova,1975-03-05,+7 912 000 11 22,MARIA@Example.com,e11.9,"
        '"Type 2 diabetes, without complications",City Hospital No. 1,Dr Petrov,therapy\n'
    )
    (row,) = parse(text)
    assert row == ReferralRow(
        row=2,
        full_name="Maria Ivanova",
        birth_date=date(1975, 3, 5),
        phone="+79120001122",
        email="maria@example.com",
        icd10="E11.9",
        diagnosis="Type 2 diabetes, without complications",
        referring_organisation="City Hospital No. 1",
        referring_doctor="Dr Petrov",
        profile="therapy",
        errors=[],
    )


def test_headers_ignore_case_spaces_punctuation_yo_and_remarks() -> None:
    header = [
        " ПРОФИЛЬ ",
        "Ф.И.О.",
        "дата  рождёния",
        "телефон (мобильный)",
        "Эл. почта",
        "МКБ",
        "ДИАГНОЗ*",
        "направившая_организация",
        "Направивший-врач",
        "Referring Organization",
    ]
    row = [
        "терапия",
        "Иванов И. И.",
        "01.02.1960",
        "9123456789",
        "a@b.ru",
        "K29.5",
        "Гастрит",
        "ЦРБ",
        "Петрова",
        "ignored: organisation is already known",
    ]
    # The second spelling of a known column would be ambiguous, so it is refused...
    with pytest.raises(InvalidValue) as refused:
        parse(table(header, row))
    assert refused.value.details["duplicate_columns"] == ["referring_organisation"]
    assert "Направившая организация (referring_organisation)" in refused.value.message
    # ... and without it every column is found.
    (parsed,) = parse(table(header[:-1], row[:-1]))
    assert parsed.ok
    assert (parsed.full_name, parsed.email, parsed.icd10, parsed.profile) == (
        "Иванов И. И.",
        "a@b.ru",
        "K29.5",
        "терапия",
    )
    assert parsed.referring_organisation == "ЦРБ"


def test_optional_columns_may_be_absent() -> None:
    header = [h for h in RU_HEADER if h not in ("Email", "Код МКБ-10")]
    cells = [c for h, c in zip(RU_HEADER, GOOD, strict=True) if h in header]
    (row,) = parse(table(header, cells))
    assert row.ok
    assert (row.email, row.icd10) == (None, None)


def test_a_title_above_the_header_is_skipped_and_rows_keep_their_numbers() -> None:
    text = "Список пациентов, направленных на консультацию\n;;\n" + table(RU_HEADER, GOOD)
    (row,) = parse(text)
    assert row.row == 4
    assert row.ok


def test_a_cell_with_a_line_break_counts_as_one_spreadsheet_row() -> None:
    text = table(RU_HEADER, [*GOOD[:5], "ИБС:\nстенокардия", *GOOD[6:]], GOOD)
    first, second = parse(text)
    assert (first.row, first.diagnosis) == (2, "ИБС: стенокардия")
    assert second.row == 3


def xlsx(rows: list[list[object]]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def test_xlsx_with_date_cells_numeric_phones_and_trailing_empty_rows() -> None:
    header: list[object] = ["№", *RU_HEADER]
    org, doctor = "ГБУЗ СО «Полевская ЦГБ»", "Орлов В. В."
    data = xlsx(
        [
            header,
            [
                1,
                "Иванов Иван",
                datetime(1960, 2, 1),
                79123456789,
                None,
                "i25.1",
                "ИБС",
                org,
                doctor,
                "кардиология",
            ],
            [None] * 10,
            [
                2,
                "Смирнова Ольга",
                date(1975, 3, 5),
                9221234567.0,
                "O@Mail.ru",
                None,
                "Миома",
                org,
                doctor,
                "гинекология",
            ],
            [
                3,
                "Сидоров Павел",
                "14.07.1958",
                "8 (922) 333-44-55",
                None,
                None,
                "Гастрит",
                org,
                doctor,
                "терапия",
            ],
            [4, "Козлов Дмитрий", 22312, 9124445566, None, None, "Гастрит", org, doctor, "терапия"],
            [5, None, None, None, None, None, None, None, None, None],
            ["", " ", "", NBSP],
        ]
    )
    assert data.startswith(b"PK\x03\x04")
    rows = parse_referral_table(data, file_name="referrals.xlsx", today=TODAY)
    assert errors_by_row(rows) == {
        2: {},
        4: {},
        5: {},
        6: {"birth_date": "not a date: write DD.MM.YYYY"},
    }
    first, second, third, _ = rows
    assert (first.birth_date, first.phone, first.icd10) == (
        date(1960, 2, 1),
        "+79123456789",
        "I25.1",
    )
    assert (second.birth_date, second.phone, second.email) == (
        date(1975, 3, 5),
        "+79221234567",
        "o@mail.ru",
    )
    assert (third.birth_date, third.phone, third.full_name) == (
        date(1958, 7, 14),
        "+79223334455",
        "Сидоров Павел",
    )


def test_xlsx_with_a_wrong_stored_size_is_read_to_the_end() -> None:
    # Some generators write <dimension ref="A1"/> whatever the size; trusting it would
    # silently drop every row but the header.
    data = xlsx([list(RU_HEADER), list(GOOD), [*GOOD[:2], "9221234567", *GOOD[3:]]])
    source, patched = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(patched, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                assert b'<dimension ref="A1:I3" />' in content
                content = content.replace(b'<dimension ref="A1:I3" />', b'<dimension ref="A1" />')
            target.writestr(item, content)
    rows = parse_referral_table(patched.getvalue(), today=TODAY)
    assert [(row.row, row.phone) for row in rows] == [(2, "+79123456789"), (3, "+79221234567")]


@pytest.mark.parametrize(
    ("raw", "phone"),
    [
        ("8 (912) 345-67-89", "+79123456789"),
        ("+7 912 345 67 89", "+79123456789"),
        ("9123456789", "+79123456789"),
        ("79123456789", "+79123456789"),
        (f"8{NBSP}912{NBSP}345-67-89", "+79123456789"),
        ("'89123456789", "+79123456789"),
    ],
)
def test_phones_as_people_write_them(raw: str, phone: str) -> None:
    row = one_row(phone=raw)
    assert (row.phone, row.errors) == (phone, [])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("12345", "not a valid phone number"),
        ("телефон", "not a valid phone number"),
        ("", "required value is missing"),
        ("8 (343) 123-45-67", "not a mobile phone number: the login and password are sent by SMS"),
    ],
)
def test_bad_phones(raw: str, message: str) -> None:
    row = one_row(phone=raw)
    assert row.phone is None
    assert said(row) == [("phone", message)]


@pytest.mark.parametrize(
    "raw",
    [
        "01.02.1960",
        "1.2.1960",
        "1960-02-01",
        "01/02/1960",
        "01-02-1960",
        " 01. 02. 1960 ",
        "01.02.1960 г.",
        "1960-02-01 00:00:00",
        "01.02.1960 0:00",
    ],
)
def test_birth_dates_as_people_write_them(raw: str) -> None:
    row = one_row(birth_date=raw)
    assert (row.birth_date, row.errors) == (date(1960, 2, 1), [])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("01.02.60", "the year has two digits, so the century is unknown: write DD.MM.YYYY"),
        ("31.02.1960", "no such date"),
        ("1 февраля 1960", "not a date: write DD.MM.YYYY"),
        ("16.03.2026", "birth date is in the future"),
        ("14.03.1896", "birth date is more than 130 years ago"),
        ("", "required value is missing"),
    ],
)
def test_bad_birth_dates(raw: str, message: str) -> None:
    row = one_row(birth_date=raw)
    assert row.birth_date is None
    assert said(row) == [("birth_date", message)]


def test_birth_date_limits_are_inclusive() -> None:
    assert one_row(birth_date="15.03.2026").birth_date == TODAY
    assert one_row(birth_date="15.03.1896").birth_date == date(1896, 3, 15)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("I25.1", "I25.1"),
        (" i25.1 ", "I25.1"),
        ("I25", "I25"),
        ("E11.65", "E11.65"),
        ("I25,1", "I25.1"),
        ("С50.9", "C50.9"),
        ("I10.", "I10"),
        ("", None),
    ],
)
def test_icd10_codes(raw: str, code: str | None) -> None:
    row = one_row(icd10=raw)
    assert (row.icd10, row.errors) == (code, [])


@pytest.mark.parametrize("raw", ["25.1", "I2", "II25", "I25.123", "I25.1, I10", "Ж25"])
def test_bad_icd10_codes(raw: str) -> None:
    row = one_row(icd10=raw)
    assert row.errors == [
        CellError(
            "icd10",
            Problem.BAD_ICD10,
            "not an ICD-10 code: a letter and two digits, like I25 or I25.1",
        )
    ]


@pytest.mark.parametrize(
    ("raw", "email"),
    [(" Ivanov@Mail.RU ", "ivanov@mail.ru"), ("", None), ("пациент@почта.рф", "пациент@почта.рф")],
)
def test_emails(raw: str, email: str | None) -> None:
    row = one_row(email=raw)
    assert (row.email, row.errors) == (email, [])


@pytest.mark.parametrize("raw", ["ivanov@mail", "ivanov.mail.ru", "a@b@c.ru", "a b@c.ru", "a@.ru"])
def test_bad_emails(raw: str) -> None:
    assert said(one_row(email=raw)) == [("email", "not a valid e-mail address")]


@pytest.mark.parametrize(
    ("column", "limit"),
    [
        ("full_name", 200),
        ("diagnosis", 1000),
        ("referring_organisation", 300),
        ("referring_doctor", 200),
        ("profile", 200),
    ],
)
def test_values_too_long(column: str, limit: int) -> None:
    assert one_row(**{column: "я" * limit}).ok
    row = one_row(**{column: "я" * (limit + 1)})
    assert getattr(row, column) is None
    assert said(row) == [(column, f"too long: {limit + 1} characters, at most {limit}")]


def test_a_row_lists_every_error_in_column_order() -> None:
    row = one_row(
        full_name="",
        birth_date="01.02.60",
        phone="123",
        email="x",
        icd10="25",
        diagnosis=" ",
        referring_organisation="",
        referring_doctor="",
        profile="",
    )
    assert [e.column for e in row.errors] == [
        "full_name",
        "birth_date",
        "phone",
        "email",
        "icd10",
        "diagnosis",
        "referring_organisation",
        "referring_doctor",
        "profile",
    ]
    assert not row.ok


def test_a_name_must_have_letters() -> None:
    assert said(one_row(full_name="12345")) == [("full_name", "not a name")]


def test_key_is_the_same_for_the_same_referral_typed_again() -> None:
    original = one_row()
    retyped = one_row(
        phone="+7 912 345 67 89",
        birth_date="1960-02-01",
        full_name="ИВАНОВ И. П.",
        referring_doctor="Петрова",
        diagnosis="ибс, стенокардия",  # the ICD-10 code stands for the diagnosis
        referring_organisation='гбуз  со "городская больница №1"',
        profile=" КАРДИОЛОГИЯ ",
    )
    assert retyped.ok
    assert retyped.key() == original.key()
    # Pinned: imported referrals are recognised by this value, so it must never drift.
    assert original.key() == "92fa8e177f2551fec311ab94fcfc062547cb25730348fa0e8b0a8fb0e071afa7"


def test_key_without_icd10_folds_the_diagnosis() -> None:
    plain = one_row(icd10="", diagnosis="Хронический гастрит, обострение")
    assert one_row(icd10="", diagnosis="хронический  гастрит обострение").key() == plain.key()
    assert one_row(icd10="", diagnosis="Хронический гастрит").key() != plain.key()
    assert (
        one_row(icd10="", referring_organisation="ЦРБ, г. Артёмовский").key()
        == one_row(icd10="", referring_organisation="црб г артемовский").key()
    )


@pytest.mark.parametrize(
    "changed",
    [
        {"phone": "+79123456780"},
        {"birth_date": "02.02.1960"},
        {"icd10": "I25.2"},
        {"profile": "терапия"},
        {"referring_organisation": "ГБУЗ СО «Городская больница № 2»"},
    ],
)
def test_key_differs_for_a_different_referral(changed: dict[str, str]) -> None:
    key = one_row().key()
    assert len(key) == 64
    assert int(key, 16) >= 0
    assert one_row(**changed).key() != key


def test_a_duplicate_of_a_bad_row_goes_through_and_later_copies_point_to_it() -> None:
    bad = [*GOOD[:3], "bad-email", *GOOD[4:]]
    rows = parse(table(RU_HEADER, bad, GOOD, GOOD, GOOD))
    assert errors_by_row(rows) == {
        2: {"email": "not a valid e-mail address"},
        3: {},
        4: {"row": "duplicate of row 3"},
        5: {"row": "duplicate of row 3"},
    }


def test_rows_with_bad_key_cells_are_not_called_duplicates() -> None:
    no_phone = [*GOOD[:2], "", *GOOD[3:]]
    rows = parse(table(RU_HEADER, no_phone, no_phone))
    assert errors_by_row(rows) == {
        2: {"phone": "required value is missing"},
        3: {"phone": "required value is missing"},
    }


def test_header_only_table_has_no_rows() -> None:
    assert parse(table(RU_HEADER)) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty"),
        (b" \r\n\r\n", "The file is empty"),
        (b";;;\r\n;;\r\n", "The table has no header row: the file has no text in it"),
        (bytes(range(256)) * 4, "The file is neither a CSV table nor an XLSX workbook"),
        (
            b"PK\x03\x04" + b"\x00" * 100,
            "The file is not a readable XLSX workbook; save the table as XLSX or CSV",
        ),
        (
            b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj",
            "The file is a PDF document, not a table; save the table as XLSX or CSV",
        ),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100,
            "The file is in the old Excel format (.xls) or another old Office format, not a table;"
            " save the table as XLSX or CSV",
        ),
        (
            "ФИО;Телефон".encode("utf-16"),
            "The file is UTF-16 text; save the table as XLSX or as CSV (UTF-8 or Windows-1251)",
        ),
    ],
)
def test_files_that_are_not_tables(data: bytes, message: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        parse_referral_table(data, today=TODAY)
    assert refused.value.message == message
    assert refused.value.http_status == 422


def test_a_docx_or_other_zip_is_not_a_workbook() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", "<document/>")
    with pytest.raises(InvalidValue, match="not a readable XLSX workbook"):
        parse_referral_table(out.getvalue(), file_name="list.docx", today=TODAY)


def test_an_empty_workbook_has_no_header_row() -> None:
    with pytest.raises(InvalidValue, match="no header row"):
        parse_referral_table(xlsx([]), today=TODAY)


def test_a_file_named_like_a_workbook_says_so() -> None:
    with pytest.raises(InvalidValue) as refused:
        parse_referral_table(bytes(range(256)), file_name="Список.xlsx", today=TODAY)
    assert "Список.xlsx is named like a workbook, but is not one" in refused.value.message


def test_missing_required_columns_are_listed_with_the_columns_found() -> None:
    header = [h for h in RU_HEADER if h not in ("Телефон", "Профиль")] + ["Примечание"]
    with pytest.raises(InvalidValue) as refused:
        parse(table(header, GOOD))
    assert refused.value.message == (
        "The table lacks required columns: Телефон (phone), Профиль (profile)"
    )
    assert refused.value.problem is Problem.MISSING_COLUMNS
    found = refused.value.details["found_columns"]
    assert refused.value.details["fields"][0]["params"] == {
        "columns": ["phone", "profile"],
        "found": found,
    }
    assert {key: value for key, value in refused.value.details.items() if key != "fields"} == {
        "field": "file",
        "missing_columns": ["phone", "profile"],
        "found_columns": [
            "ФИО",
            "Дата рождения",
            "Email",
            "Код МКБ-10",
            "Диагноз",
            "Направившая организация",
            "Направивший врач",
            "Примечание",
        ],
    }


def test_a_table_without_a_header_lists_what_it_found() -> None:
    with pytest.raises(InvalidValue) as refused:
        parse(table(GOOD, GOOD))
    assert len(refused.value.details["missing_columns"]) == 7
    assert refused.value.details["found_columns"][0] == "Иванов Иван Петрович"


def test_too_many_rows_are_refused() -> None:
    assert len(parse(table(RU_HEADER, *[GOOD] * MAX_ROWS))) == MAX_ROWS
    with pytest.raises(InvalidValue) as refused:
        parse(table(RU_HEADER, *[GOOD] * (MAX_ROWS + 1)))
    assert refused.value.details["max_rows"] == MAX_ROWS
    assert refused.value.details["fields"] == [
        {"field": "file", "code": "too_many_rows", "params": {"max": MAX_ROWS}}
    ]


SAMPLE_ERRORS = [
    {
        "column": "birth_date",
        "code": "two_digit_year",
        "params": {},
        "message": "the year has two digits, so the century is unknown: write DD.MM.YYYY",
    },
    {"column": "phone", "code": "bad_phone", "params": {}, "message": "not a valid phone number"},
]
SAMPLE_REPORT = [
    *({"row": n, "ok": True, "errors": []} for n in range(2, 7)),
    {"row": 7, "ok": False, "errors": SAMPLE_ERRORS},
]


@pytest.mark.parametrize("name", ["referrals.csv", "referrals-cp1251.csv"])
def test_the_documented_samples_give_the_documented_report(name: str) -> None:
    rows = parse_referral_table((SAMPLES / name).read_bytes(), file_name=name, today=TODAY)
    assert [row.report() for row in rows] == SAMPLE_REPORT
    assert [row.profile for row in rows] == [
        "кардиология",
        "гинекология",
        "кардиология",
        "терапия",
        "гинекология",
        "терапия",
    ]
    assert rows[0].phone == "+79005550101"
    doc = (SAMPLES.parent / "referral-import.md").read_text(encoding="utf-8")
    for error in SAMPLE_ERRORS:
        assert str(error["message"]) in doc
