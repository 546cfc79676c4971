"""Which duty consultation topics a doctor's specialty answers: the booking page offers
these for the chosen doctor instead of every topic.

Pure: no I/O. Specialties are free text as managers write them («кардиолог», «Врач-
кардиолог», «акушер-гинеколог», «терапевт»), so they are matched by word stems, in
Russian and English. "Other" is always offered: a patient may not know which topic fits.
"""

from __future__ import annotations

from typing import Final

from telemed.scheduling.models import DutyTopic

STEMS: Final = {
    DutyTopic.CARDIOVASCULAR: ("кардио", "cardio", "терапев", "therap", "общей практики"),
    DutyTopic.GYNAECOLOGICAL: ("гинек", "gyn", "акушер", "obstet"),
    DutyTopic.HEALTHY_LIFESTYLE: (
        "терапев",
        "therap",
        "общей практики",
        "general practi",
        "профилакт",
        "prevent",
        "диетолог",
        "nutrition",
        "кардио",
        "cardio",
    ),
}


def topics_for(specialty: str) -> list[DutyTopic]:
    """The topics a doctor of ``specialty`` takes, in the enum's order, "other" last."""
    text = specialty.casefold()
    found = [topic for topic, stems in STEMS.items() if any(stem in text for stem in stems)]
    return [*found, DutyTopic.OTHER]
