"""Every error the API can return is told in the user's words, in Russian and English.

The API's error codes are the members of ``ErrorCode`` (a ``TelemedError`` has one), and
what is wrong with a value is a member of ``Problem`` (``InvalidValue`` and a referral
import's ``CellError`` require one, which mypy checks; schema errors are mapped onto it
by ``validation_details``). So walking the two enums walks every code a client can get:
the web app must have a text for each, and the texts must name the same parameters in
both languages. Then real requests show that the codes and parameters arrive."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest

from telemed.api import validation_details
from telemed.errors import ErrorCode, Problem
from tests.factories import AppClient, assert_error, next_phone

WEB = Path(__file__).resolve().parent.parent / "web"
LANGUAGES = ("ru", "en")


def words(part: str, lang: str) -> dict[str, str]:
    loaded: dict[str, str] = json.loads((WEB / "i18n" / f"{part}.{lang}.json").read_text("utf-8"))
    return loaded


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_error_code_has_a_text_in_the_app_and_in_the_room(lang: str) -> None:
    app, room = words("app", lang), words("room", lang)
    assert [code for code in ErrorCode if f"error.{code}" not in app] == []
    assert [code for code in ErrorCode if f"refused_{code}" not in room] == []


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_problem_has_a_text(lang: str) -> None:
    app = words("app", lang)
    assert [problem for problem in Problem if f"problem.{problem}" not in app] == []
    # No text for a problem the server no longer has: a renamed code would go unnoticed.
    known = {f"problem.{problem}" for problem in Problem}
    assert [key for key in app if key.startswith("problem.") and key not in known] == []


def test_the_languages_name_the_same_parameters() -> None:
    ru, en = words("app", "ru"), words("app", "en")
    for problem in Problem:
        key = f"problem.{problem}"
        assert placeholders(ru[key]) == placeholders(en[key]), key


class Form(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str = pydantic.Field(min_length=2, max_length=5)
    age: int = pydantic.Field(ge=0, le=150)
    icd10: str = pydantic.Field(pattern=r"^[A-Z]\d\d$")
    kind: int = 0


def test_schema_errors_get_a_problem_and_the_limits_their_texts_name() -> None:
    cases: list[tuple[dict[str, Any], str, str, dict[str, Any]]] = [
        ({"age": 1, "icd10": "I25"}, "name", "missing", {}),
        ({"name": "x", "age": 1, "icd10": "I25"}, "name", "too_short", {"min": 2}),
        ({"name": "xxxxxx", "age": 1, "icd10": "I25"}, "name", "too_long", {"max": 5}),
        ({"name": "xx", "age": 151, "icd10": "I25"}, "age", "too_large", {"max": 150}),
        ({"name": "xx", "age": -1, "icd10": "I25"}, "age", "too_small", {"min": 0}),
        ({"name": "xx", "age": "old", "icd10": "I25"}, "age", "not_number", {}),
        ({"name": "xx", "age": 1, "icd10": "I2"}, "icd10", "bad_icd10", {}),
        ({"name": "xx", "age": 1, "icd10": "I25", "x": 1}, "x", "unknown_field", {}),
        ({"name": 5, "age": 1, "icd10": "I25"}, "name", "wrong_type", {}),
    ]
    app = words("app", "ru")
    for data, field, code, params in cases:
        with pytest.raises(pydantic.ValidationError) as refused:
            Form.model_validate(data, strict=True)
        (entry,) = validation_details(refused.value)["fields"]
        assert (entry["field"], entry["code"], entry["params"]) == (field, code, params), data
        assert placeholders(app[f"problem.{code}"]) <= set(params), code


async def test_a_request_refused_by_the_schema_names_each_field_s_problem(
    client: AppClient,
) -> None:
    phone = next_phone()
    response = await client.post(
        "/api/v1/auth/register",
        json={"full_name": "", "birth_date": "2999-01-01", "phone": phone, "password": "x"},
        # (no consent_version: the schema refuses that too)
    )
    error = await assert_error(response, 400, "invalid_input")
    codes = {entry["field"]: entry["code"] for entry in error["details"]["fields"]}
    assert codes["full_name"] == "too_short"
    assert codes["consent_version"] == "missing"
    assert set(codes.values()) <= {str(problem) for problem in Problem}
