"""The conclusion PDF: what a reader (pypdf) finds in it, page flow, determinism, the font."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from io import BytesIO
from pathlib import Path

import pytest
from pypdf import PdfReader

from telemed.scheduling.conclusion_pdf import (
    FONT_ENV,
    SYSTEM_FONTS,
    ConclusionSheet,
    find_font,
    render_conclusion_pdf,
)

DIAGNOSIS = "Ишемическая болезнь сердца: стабильная стенокардия напряжения, ФК II"
FINDINGS = (
    "Жалобы на давящие боли за грудиной при ходьбе на 300–500 м, проходящие в покое.\n"
    "АД 134/86 мм рт. ст., ЧСС 68 в минуту. По данным ЭКГ — ритм синусовый."
)
RECOMMENDATIONS = (
    "1. Продолжить приём бисопролола 5 мг утром.\n"
    "2. Аторвастатин 40 мг вечером, контроль липидограммы через 6 недель.\n"
    "3. Повторная консультация кардиолога через 3 месяца."
)

RU = ConclusionSheet(
    locale="ru",
    time_zone="Europe/Moscow",
    service_name="Телемед",
    centre_name="Городская клиническая больница № 1",
    doctor_name="Петрова Анна Сергеевна",
    doctor_specialty="кардиолог",
    patient_name="Иванов Иван Иванович",
    patient_birth_date=date(1961, 5, 14),
    consultation_started_at=datetime(2026, 12, 3, 7, 0, tzinfo=UTC),
    route="referral",
    diagnosis=DIAGNOSIS,
    icd10="I20.8",
    findings=FINDINGS,
    recommendations=RECOMMENDATIONS,
    version=1,
    issued_at=datetime(2026, 12, 3, 11, 30, tzinfo=UTC),
    amendment_reason=None,
    consultation_id="0b8f8c1e-5d2a-4c3e-9a51-6f0e2b7d4c19",
)


def page_texts(data: bytes) -> list[str]:
    """Each page's text with runs of whitespace (line breaks included) made one space."""
    return [" ".join(page.extract_text().split()) for page in PdfReader(BytesIO(data)).pages]


def text_of(data: bytes) -> str:
    return " ".join(page_texts(data))


def test_russian_conclusion_reads_back() -> None:
    data = render_conclusion_pdf(RU)

    assert data.startswith(b"%PDF-")
    text = text_of(data)
    for expected in (
        "Телемед",
        "Заключение врача по результатам онлайн-консультации",
        "Пациент Иванов Иван Иванович",
        "Дата рождения 14 мая 1961 г.",
        "Медицинский центр Городская клиническая больница № 1",
        "Врач Петрова Анна Сергеевна, кардиолог",
        # 07:00 UTC is 10:00 in Moscow, and the zone is named.
        "3 декабря 2026 г., 10:00 (Europe/Moscow, UTC+3)",
        "по направлению лечащего врача",
        "Диагноз " + DIAGNOSIS,
        "Код по МКБ-10: I20.8",
        "Результаты консультации Жалобы на давящие боли",
        "ритм синусовый",
        "Рекомендации 1. Продолжить приём бисопролола 5 мг утром.",
        "3. Повторная консультация кардиолога через 3 месяца.",
        "Версия 1 от 3 декабря 2026 г., 14:30",
        "Дата выдачи: 3 декабря 2026 г., 14:30 (Europe/Moscow, UTC+3)",
        "Консультация 0b8f8c1e-5d2a-4c3e-9a51-6f0e2b7d4c19",
        "стр. 1 из 1",
    ):
        assert expected in text, expected
    # A first version has no amendment note, and no English leaks into a Russian sheet.
    assert "причина изменения" not in text
    assert "Заменяет" not in text
    assert "Diagnosis" not in text


def test_pdf_metadata() -> None:
    metadata = PdfReader(BytesIO(render_conclusion_pdf(RU))).metadata

    assert metadata is not None
    assert metadata.title == "Заключение врача по результатам онлайн-консультации"
    assert metadata.author == "Телемед"
    assert metadata.creation_date == RU.issued_at


def test_english_conclusion_uses_english_labels() -> None:
    sheet = dataclasses.replace(
        RU,
        locale="en",
        time_zone="Asia/Yekaterinburg",
        route="duty",
        patient_birth_date=None,
        diagnosis="Stable angina pectoris, class II",
    )

    text = text_of(render_conclusion_pdf(sheet))

    for expected in (
        "Doctor's conclusion after an online consultation",
        "Patient Иванов Иван Иванович",
        "Date of birth —",
        "Doctor Петрова Анна Сергеевна, кардиолог",
        "3 December 2026, 12:00 (Asia/Yekaterinburg, UTC+5)",
        "to the doctor on duty",
        "Diagnosis Stable angina pectoris, class II",
        "ICD-10 code: I20.8",
        "Findings",
        "Recommendations",
        "Version 1 of 3 December 2026, 16:30",
        "Issued: 3 December 2026, 16:30 (Asia/Yekaterinburg, UTC+5)",
        "Consultation 0b8f8c1e-5d2a-4c3e-9a51-6f0e2b7d4c19",
        "page 1 of 1",
    ):
        assert expected in text, expected
    for russian_label in ("Заключение врача", "Пациент", "Диагноз", "Рекомендации", "стр."):
        assert russian_label not in text


def test_long_recommendations_flow_over_pages_with_numbered_footers() -> None:
    lines = [
        f"{n}. Пункт рекомендаций номер {n}: контроль артериального давления утром и вечером."
        for n in range(1, 301)
    ]
    sheet = dataclasses.replace(RU, recommendations="\n".join(lines))

    pages = page_texts(render_conclusion_pdf(sheet))

    total = len(pages)
    assert total >= 2
    for number, page in enumerate(pages, start=1):
        assert f"стр. {number} из {total}" in page
        assert "Консультация 0b8f8c1e-5d2a-4c3e-9a51-6f0e2b7d4c19" in page
    everything = " ".join(pages)
    for line in (lines[0], lines[149], lines[-1]):
        assert line in everything
    # The closing block comes after the last recommendation, on the last page.
    assert "Версия 1 от 3 декабря 2026 г., 14:30" in pages[-1]
    assert pages[-1].index(lines[-1]) < pages[-1].index("Версия 1 от")


def test_amendment_prints_version_and_reason() -> None:
    sheet = dataclasses.replace(
        RU,
        version=2,
        previous_versions=1,
        issued_at=datetime(2026, 12, 4, 9, 5, tzinfo=UTC),
        amendment_reason="уточнён функциональный класс стенокардии по данным нагрузочной пробы",
    )

    text = text_of(render_conclusion_pdf(sheet))

    assert (
        "Версия 2 от 4 декабря 2026 г., 12:05; причина изменения: "
        "уточнён функциональный класс стенокардии по данным нагрузочной пробы"
    ) in text
    assert "Заменяет версию 1." in text


def test_rendering_is_deterministic() -> None:
    first = render_conclusion_pdf(RU)

    assert render_conclusion_pdf(RU) == first
    assert render_conclusion_pdf(dataclasses.replace(RU, findings="Без особенностей.")) != first


def test_rendering_is_identical_across_processes() -> None:
    """Nothing depends on the process: not the clock, not str hashing (set order)."""
    script = (
        "import hashlib, sys\n"
        "from tests.test_conclusion_pdf import RU\n"
        "from telemed.scheduling.conclusion_pdf import render_conclusion_pdf\n"
        "sys.stdout.write(hashlib.sha256(render_conclusion_pdf(RU)).hexdigest())\n"
    )
    root = Path(__file__).resolve().parent.parent
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }

    assert digests == {hashlib.sha256(render_conclusion_pdf(RU)).hexdigest()}


def test_font_without_bold_companion_renders(tmp_path: Path) -> None:
    regular = tmp_path / "Lonely.ttf"
    shutil.copyfile(find_font(), regular)

    text = text_of(render_conclusion_pdf(RU, font_path=regular))

    assert "Диагноз " + DIAGNOSIS in text


def test_find_font_honours_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(FONT_ENV, raising=False)
    system = find_font()
    assert system in SYSTEM_FONTS

    chosen = tmp_path / "Chosen.ttf"
    shutil.copyfile(system, chosen)
    monkeypatch.setenv(FONT_ENV, str(chosen))

    assert find_font() == chosen
    assert "Иванов Иван Иванович" in text_of(render_conclusion_pdf(RU))


def test_find_font_rejects_a_bad_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "Font.ttf"
    monkeypatch.setenv(FONT_ENV, str(missing))

    with pytest.raises(RuntimeError, match=FONT_ENV) as raised:
        find_font()
    assert str(missing) in str(raised.value)
    with pytest.raises(RuntimeError, match=FONT_ENV):
        render_conclusion_pdf(RU)

    not_a_font = tmp_path / "notes.txt"
    not_a_font.write_text("not a font", encoding="utf-8")
    monkeypatch.setenv(FONT_ENV, str(not_a_font))
    with pytest.raises(RuntimeError, match=r"\.ttf"):
        find_font()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"locale": "de"}, "locale"),
        ({"time_zone": "Mars/Olympus"}, "time zone"),
        # Naive datetimes, on purpose.
        ({"issued_at": datetime(2026, 12, 3, 11, 30)}, "issued_at"),
        ({"consultation_started_at": datetime(2026, 12, 3, 7, 0)}, "consultation_started_at"),
        ({"version": 0}, "version"),
    ],
)
def test_sheet_rejects_what_it_cannot_print(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(RU, **change)  # type: ignore[arg-type]  # values vary by field
