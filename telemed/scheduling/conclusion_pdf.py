"""A doctor's conclusion after an online consultation, rendered as a PDF.

Pure: a :class:`ConclusionSheet` in, PDF bytes out; no database, no clock, no network.
The same sheet always gives the same bytes (the creation date is ``issued_at`` and the
file identifier is fpdf2's hash of the content), so a stored conclusion can be rendered
again on demand instead of being kept as a file.

Cyrillic needs an embedded Unicode font: :func:`find_font` looks for one
(``TELEMED_PDF_FONT``, then common system paths; on Debian the ``fonts-dejavu-core``
package provides DejaVu Sans).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fpdf import FPDF
from fpdf.enums import Align, MethodReturnValue, TableBordersLayout, XPos, YPos
from fpdf.fonts import FontFace

from telemed.notify.texts import EN_MONTHS, RU_MONTHS

FONT_ENV: Final = "TELEMED_PDF_FONT"
FONT_PACKAGE: Final = "fonts-dejavu-core"

# Regular faces with Cyrillic glyphs, most likely first: Debian/Ubuntu, Fedora, Arch, macOS.
SYSTEM_FONTS: Final[tuple[Path, ...]] = tuple(
    Path(p)
    for p in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans-fonts/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/google-noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        "/usr/share/fonts/gnu-free/FreeSans.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/Library/Fonts/Arial.ttf",
    )
)

_FONT_SUFFIXES: Final = frozenset({".ttf", ".otf"})
_FAMILY: Final = "ConclusionSans"

# Russian dates use the genitive ("3 декабря 2026 г."): the same month names as the
# notification texts.
_MONTHS: Final[dict[str, tuple[str, ...]]] = {"ru": RU_MONTHS, "en": EN_MONTHS}

_LABELS: Final[dict[str, dict[str, str]]] = {
    "ru": {
        "title": "Заключение врача по результатам онлайн-консультации",
        "patient": "Пациент",
        "birth_date": "Дата рождения",
        "centre": "Медицинский центр",
        "doctor": "Врач",
        "started_at": "Дата и время консультации",
        "route": "Порядок обращения",
        "diagnosis": "Диагноз",
        "icd10": "Код по МКБ-10",
        "findings": "Результаты консультации",
        "recommendations": "Рекомендации",
        "version": "Версия {version} от {issued}",
        "reason": "причина изменения: {reason}",
        "supersedes": "Заменяет версию {previous}.",
        "issued": "Дата выдачи",
        "not_given": "—",
        "page": "стр. {page} из {pages}",
        "reference": "Консультация {id}",
        "route.initiative": "по инициативе пациента",
        "route.duty": "к дежурному врачу",
        "route.referral": "по направлению лечащего врача",
    },
    "en": {
        "title": "Doctor's conclusion after an online consultation",
        "patient": "Patient",
        "birth_date": "Date of birth",
        "centre": "Medical centre",
        "doctor": "Doctor",
        "started_at": "Consultation date and time",
        "route": "Route",
        "diagnosis": "Diagnosis",
        "icd10": "ICD-10 code",
        "findings": "Findings",
        "recommendations": "Recommendations",
        "version": "Version {version} of {issued}",
        "reason": "reason for the change: {reason}",
        "supersedes": "Supersedes version {previous}.",
        "issued": "Issued",
        "not_given": "—",
        "page": "page {page} of {pages}",
        "reference": "Consultation {id}",
        "route.initiative": "at the patient's own request",
        "route.duty": "to the doctor on duty",
        "route.referral": "referred by the attending doctor",
    },
}

# Layout, in millimetres and points.
_MARGIN: Final = 20.0
_TOP_MARGIN: Final = 18.0
_BOTTOM_MARGIN: Final = 20.0
_BODY_PT: Final = 10.5
_LINE_MM: Final = 5.2
_SMALL_PT: Final = 8.0
_GREY: Final = 110
# A heading is moved to the next page unless this much room is left below it, so that a
# section title never sits alone at the foot of a page.
_HEADING_KEEP_MM: Final = 22.0


@dataclass(frozen=True)
class ConclusionSheet:
    """Everything printed on one version of a conclusion, already resolved to text.

    ``time_zone`` is an IANA name; every time is printed in it, with the zone named.
    Datetimes must be aware. ``previous_versions`` > 0 on a version above 1 adds a
    "Supersedes version N" note (N = ``version - 1``). Raises ``ValueError`` on an
    unknown locale or time zone, a naive datetime or a version below 1.
    """

    locale: str
    time_zone: str
    service_name: str
    centre_name: str
    doctor_name: str
    doctor_specialty: str
    patient_name: str
    patient_birth_date: date | None
    consultation_started_at: datetime | None
    route: str
    diagnosis: str
    icd10: str | None
    findings: str
    recommendations: str
    version: int
    issued_at: datetime
    amendment_reason: str | None
    consultation_id: str
    previous_versions: int = 0

    def __post_init__(self) -> None:
        if self.locale not in _LABELS:
            raise ValueError(f"unsupported locale {self.locale!r}; expected one of: ru, en")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.time_zone!r}") from exc
        for name in ("issued_at", "consultation_started_at"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware")
        if self.version < 1:
            raise ValueError("version starts at 1")


def find_font() -> Path:
    """Return a TrueType/OpenType font with Cyrillic glyphs for conclusion PDFs.

    ``TELEMED_PDF_FONT`` wins when set: it must name an existing .ttf/.otf file, whose
    Cyrillic coverage is the operator's responsibility (missing glyphs print blank and
    fpdf2 logs a warning). Otherwise the first of :data:`SYSTEM_FONTS` that exists.
    Raises ``RuntimeError`` saying what to install or set when nothing fits.
    """
    configured = os.environ.get(FONT_ENV, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise RuntimeError(f"{FONT_ENV}={configured!r}: no such font file")
        if path.suffix.lower() not in _FONT_SUFFIXES:
            raise RuntimeError(
                f"{FONT_ENV}={configured!r}: expected a .ttf or .otf font with Cyrillic glyphs"
            )
        return path
    for path in SYSTEM_FONTS:
        if path.is_file():
            return path
    raise RuntimeError(
        "No font with Cyrillic glyphs found for conclusion PDFs: install the Debian package "
        f"{FONT_PACKAGE} (apt-get install {FONT_PACKAGE}) or set {FONT_ENV} to a .ttf file"
    )


def _bold_companion(regular: Path) -> Path | None:
    """The bold face shipped beside ``regular`` under a usual name, if there is one."""
    stem, suffix = regular.stem, regular.suffix
    names = [f"{stem}-Bold{suffix}", f"{stem}Bold{suffix}", f"{stem}bd{suffix}"]
    if stem.endswith("-Regular"):
        names.insert(0, f"{stem.removesuffix('-Regular')}-Bold{suffix}")
    for name in names:
        candidate = regular.with_name(name)
        if candidate.is_file():
            return candidate
    return None


def render_conclusion_pdf(sheet: ConclusionSheet, *, font_path: Path | None = None) -> bytes:
    """Render ``sheet`` as an A4 PDF and return its bytes (identical for identical sheets).

    ``font_path`` defaults to :func:`find_font`; a bold face beside it is used for
    headings when present. Raises ``RuntimeError`` when no font can be found.
    """
    regular = font_path if font_path is not None else find_font()
    labels = _LABELS[sheet.locale]
    zone = ZoneInfo(sheet.time_zone)

    pdf = _ConclusionDocument(
        page_label=labels["page"],
        reference=labels["reference"].format(id=sheet.consultation_id),
        service_name=sheet.service_name,
    )
    pdf.add_font(_FAMILY, "", regular)
    bold = _bold_companion(regular)
    if bold is not None:
        pdf.add_font(_FAMILY, "B", bold)
        pdf.bold_style = "B"

    # Determinism: the creation date is the issue time, not "now"; fpdf2 derives the
    # /ID from a hash of the content and this date, and writes no XMP unless asked to.
    pdf.set_creation_date(sheet.issued_at)
    pdf.set_title(labels["title"])
    pdf.set_author(sheet.service_name)
    pdf.set_creator(sheet.service_name)
    pdf.set_lang(sheet.locale)
    pdf.set_margins(_MARGIN, _TOP_MARGIN, _MARGIN)
    pdf.set_auto_page_break(auto=True, margin=_BOTTOM_MARGIN)
    pdf.alias_nb_pages()
    pdf.add_page()

    _write_title(pdf, labels["title"])
    _write_facts(pdf, sheet, labels, zone)

    diagnosis = _clean(sheet.diagnosis)
    if sheet.icd10:
        diagnosis += f"\n{labels['icd10']}: {_clean(sheet.icd10)}"
    _write_section(pdf, labels["diagnosis"], diagnosis)
    _write_section(pdf, labels["findings"], _clean(sheet.findings))
    _write_section(pdf, labels["recommendations"], _clean(sheet.recommendations))
    _write_issue(pdf, sheet, labels, zone)
    return bytes(pdf.output())


class _ConclusionDocument(FPDF):
    """FPDF with the running header (service name) and footer (reference, page N of M)."""

    def __init__(self, *, page_label: str, reference: str, service_name: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.page_label = page_label
        self.reference = reference
        self.service_name = service_name
        self.bold_style = ""  # "B" once a bold face is registered
        self.body_top = 0.0  # where a page's content starts, below the running header

    def header(self) -> None:
        self.set_font(_FAMILY, self.bold_style, 9)
        self.set_text_color(_GREY)
        self.cell(0, 5, _clean(self.service_name), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(180)
        self.line(self.l_margin, self.get_y() + 1, self.w - self.r_margin, self.get_y() + 1)
        self.set_text_color(0)
        self.set_y(self.get_y() + 5)
        self.body_top = self.get_y()

    def footer(self) -> None:
        self.set_y(-(_BOTTOM_MARGIN - 5))
        self.set_font(_FAMILY, "", _SMALL_PT)
        self.set_text_color(_GREY)
        width = (self.w - self.l_margin - self.r_margin) / 2
        self.cell(width, 4, _clean(self.reference), align=Align.L)
        page = self.page_label.format(page=self.page_no(), pages=self.str_alias_nb_pages)
        self.cell(width, 4, page, align=Align.R)
        self.set_text_color(0)


def _write_title(pdf: _ConclusionDocument, title: str) -> None:
    pdf.set_font(_FAMILY, pdf.bold_style, 15)
    pdf.multi_cell(0, 7.5, title, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)


def _write_facts(
    pdf: _ConclusionDocument, sheet: ConclusionSheet, labels: dict[str, str], zone: ZoneInfo
) -> None:
    not_given = labels["not_given"]
    birth = (
        _format_date(sheet.patient_birth_date, sheet.locale) if sheet.patient_birth_date else None
    )
    started = (
        _format_moment(sheet.consultation_started_at, sheet.locale, zone, with_zone=True)
        if sheet.consultation_started_at
        else None
    )
    doctor = ", ".join(p for p in (_clean(sheet.doctor_name), _clean(sheet.doctor_specialty)) if p)
    rows = [
        (labels["patient"], _clean(sheet.patient_name)),
        (labels["birth_date"], birth or not_given),
        (labels["centre"], _clean(sheet.centre_name) or not_given),
        (labels["doctor"], doctor or not_given),
        (labels["started_at"], started or not_given),
        (labels["route"], labels.get(f"route.{sheet.route}", _clean(sheet.route))),
    ]
    pdf.set_font(_FAMILY, "", _BODY_PT)
    label_style = FontFace(emphasis="BOLD" if pdf.bold_style else None, color=(60, 60, 60))
    with pdf.table(
        col_widths=(58, 112),
        first_row_as_headings=False,
        borders_layout=TableBordersLayout.HORIZONTAL_LINES,
        text_align=(Align.L, Align.L),
        v_align="TOP",
        line_height=_LINE_MM,
        padding=(1.5, 1.5, 1.5, 0),
        width=pdf.epw,
    ) as table:
        for label, value in rows:
            row = table.row()
            row.cell(label, style=label_style)
            row.cell(value)
    pdf.ln(4)


def _write_section(pdf: _ConclusionDocument, heading: str, text: str) -> None:
    if pdf.get_y() + _HEADING_KEEP_MM > pdf.page_break_trigger:
        pdf.add_page()
    pdf.set_font(_FAMILY, pdf.bold_style, 12)
    pdf.cell(0, 7, heading, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(_FAMILY, "", _BODY_PT)
    pdf.multi_cell(0, _LINE_MM, text or "—", align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)


def _write_issue(
    pdf: _ConclusionDocument, sheet: ConclusionSheet, labels: dict[str, str], zone: ZoneInfo
) -> None:
    """The closing block: version (and reason), issue time, the doctor. Kept on one page."""
    version = labels["version"].format(
        version=sheet.version,
        issued=_format_moment(sheet.issued_at, sheet.locale, zone, with_zone=False),
    )
    if sheet.amendment_reason:
        version += "; " + labels["reason"].format(reason=_clean(sheet.amendment_reason))
    issued = _format_moment(sheet.issued_at, sheet.locale, zone, with_zone=True)
    paragraphs: list[tuple[str, str]] = [("", version)]
    if sheet.version > 1 and sheet.previous_versions > 0:
        paragraphs.append(("", labels["supersedes"].format(previous=sheet.version - 1)))
    paragraphs.append(("", f"{labels['issued']}: {issued}"))
    doctor = ", ".join(p for p in (_clean(sheet.doctor_specialty), _clean(sheet.doctor_name)) if p)
    paragraphs.append((pdf.bold_style, doctor))

    rule_gap, signature_gap = 3.0, 4.0
    height = 2 + rule_gap + signature_gap
    for style, text in paragraphs:
        pdf.set_font(_FAMILY, style, _BODY_PT)
        height += _text_height(pdf, text)
    # Move the block whole to the next page unless it is taller than a page anyway.
    if pdf.get_y() + height > pdf.page_break_trigger and height < pdf.eph:
        pdf.add_page()

    if pdf.get_y() > pdf.body_top:  # at the top of a page the header's rule is enough
        pdf.ln(2)
        pdf.set_draw_color(180)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
        pdf.ln(rule_gap)
    for index, (style, text) in enumerate(paragraphs):
        if index == len(paragraphs) - 1:
            pdf.ln(signature_gap)
        pdf.set_font(_FAMILY, style, _BODY_PT)
        pdf.multi_cell(0, _LINE_MM, text, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _text_height(pdf: _ConclusionDocument, text: str) -> float:
    """How tall ``text`` would be as a full-width body paragraph in the current font."""
    height = pdf.multi_cell(
        0, _LINE_MM, text, align=Align.L, dry_run=True, output=MethodReturnValue.HEIGHT
    )
    assert isinstance(height, float | int)  # output=HEIGHT returns just the height
    return float(height)


def _format_date(day: date, locale: str) -> str:
    month = _MONTHS[locale][day.month - 1]
    if locale == "ru":
        return f"{day.day} {month} {day.year} г."
    return f"{day.day} {month} {day.year}"


def _format_moment(moment: datetime, locale: str, zone: ZoneInfo, *, with_zone: bool) -> str:
    local = moment.astimezone(zone)
    text = f"{_format_date(local.date(), locale)}, {local:%H:%M}"
    if with_zone:
        text += f" ({zone.key}, {_format_offset(local.utcoffset())})"
    return text


def _format_offset(offset: timedelta | None) -> str:
    """``UTC+3``, ``UTC+5:30``, ``UTC-3:30``, ``UTC``."""
    minutes = int((offset or timedelta()).total_seconds()) // 60
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def _clean(text: str) -> str:
    """Normalise line breaks and drop control characters a PDF font cannot show."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    return "".join(ch for ch in text if ch == "\n" or (ch >= " " and ch != "\x7f")).strip()
