"""Cutting a duty doctor's time range into bookable slots (pure rules)."""

from __future__ import annotations

from datetime import datetime, timedelta

from telemed.errors import InvalidValue, Problem

MIN_SLOT_MINUTES = 10
MAX_SLOT_MINUTES = 120
MAX_RANGE = timedelta(hours=24)


def cut_slots(
    starts_at: datetime,
    ends_at: datetime,
    slot_minutes: int,
    *,
    now: datetime,
    horizon: timedelta,
) -> list[tuple[datetime, datetime]]:
    """Consecutive ``slot_minutes`` slots from ``starts_at``; a remainder shorter than one
    slot at the end is left out. Raises ``InvalidValue`` for a range in the past, further
    ahead than ``horizon``, reversed, longer than a day, or slots of odd length."""
    if not MIN_SLOT_MINUTES <= slot_minutes <= MAX_SLOT_MINUTES:
        raise InvalidValue(
            f"A slot lasts {MIN_SLOT_MINUTES} to {MAX_SLOT_MINUTES} minutes",
            problem=Problem.SLOT_LENGTH,
            field="slot_minutes",
            params={"min": MIN_SLOT_MINUTES, "max": MAX_SLOT_MINUTES},
        )
    if ends_at <= starts_at:
        raise InvalidValue(
            "The end must be after the start", problem=Problem.END_BEFORE_START, field="ends_at"
        )
    if ends_at - starts_at > MAX_RANGE:
        raise InvalidValue(
            "Publish at most one day at a time", problem=Problem.RANGE_TOO_LONG, field="ends_at"
        )
    if starts_at <= now:
        raise InvalidValue(
            "Slots must be in the future", problem=Problem.IN_PAST, field="starts_at"
        )
    if ends_at > now + horizon:
        raise InvalidValue(
            f"Slots can be published up to {horizon.days} days ahead",
            problem=Problem.BEYOND_HORIZON,
            field="ends_at",
            params={"days": horizon.days},
            details={"horizon_days": horizon.days},
        )
    step = timedelta(minutes=slot_minutes)
    slots = []
    start = starts_at
    while start + step <= ends_at:
        slots.append((start, start + step))
        start += step
    if not slots:
        raise InvalidValue(
            "The range is shorter than one slot", problem=Problem.RANGE_TOO_SHORT, field="ends_at"
        )
    return slots
