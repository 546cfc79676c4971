"""The consultation state machine: one table decides every move.

Pure rules, no I/O. ``check_move`` says whether a party may make a move from the
consultation's current state and where it leads; services call it before changing
anything, so a refused move changes nothing.

    requested ─schedule→ scheduled ─start→ in_progress ─end→ completed ─conclude→ concluded
        │ decline→ declined   │ reschedule↺
        └─cancel→ cancelled ←─┘ cancel      scheduled ─no_show→ no_show
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from telemed.errors import Forbidden, InvalidState
from telemed.scheduling.models import State


class Party(StrEnum):
    """Who acts, relative to one consultation."""

    PATIENT = "patient"  # the consultation's patient
    DOCTOR = "doctor"  # the consultation's doctor, or a doctor of its centre while unassigned
    MANAGER = "manager"  # a manager of the service or of its centre, or an admin
    SYSTEM = "system"  # background work (no-shows, consultations the doctor never held)
    REGISTRY = "registry"  # a regional system's client of the centre: reads, never moves


class Move(StrEnum):
    SCHEDULE = "schedule"
    RESCHEDULE = "reschedule"
    DECLINE = "decline"
    CANCEL = "cancel"
    START = "start"
    END = "end"
    CONCLUDE = "conclude"
    AMEND = "amend"
    MARK_NO_SHOW = "mark_no_show"


@dataclass(frozen=True)
class Transition:
    sources: frozenset[State]
    target: State
    parties: frozenset[Party]


def _t(sources: set[State], target: State, parties: set[Party]) -> Transition:
    return Transition(frozenset(sources), target, frozenset(parties))


TRANSITIONS: dict[Move, Transition] = {
    Move.SCHEDULE: _t({State.REQUESTED}, State.SCHEDULED, {Party.DOCTOR}),
    Move.RESCHEDULE: _t({State.SCHEDULED}, State.SCHEDULED, {Party.DOCTOR}),
    Move.DECLINE: _t({State.REQUESTED}, State.DECLINED, {Party.DOCTOR}),
    Move.CANCEL: _t(
        {State.REQUESTED, State.SCHEDULED},
        State.CANCELLED,
        {Party.PATIENT, Party.DOCTOR, Party.MANAGER, Party.SYSTEM},
    ),
    Move.START: _t({State.SCHEDULED}, State.IN_PROGRESS, {Party.DOCTOR}),
    Move.END: _t({State.IN_PROGRESS}, State.COMPLETED, {Party.DOCTOR}),
    Move.CONCLUDE: _t({State.COMPLETED}, State.CONCLUDED, {Party.DOCTOR}),
    # An amendment is a new version of the conclusion; the state stays concluded.
    Move.AMEND: _t({State.CONCLUDED}, State.CONCLUDED, {Party.DOCTOR}),
    Move.MARK_NO_SHOW: _t({State.SCHEDULED}, State.NO_SHOW, {Party.SYSTEM}),
}

# States in which the consultation still holds its duty slot and its doctor's time.
HOLDS_TIME = frozenset({State.SCHEDULED, State.IN_PROGRESS})
# States in which its video room may be open.
LIVE = frozenset({State.SCHEDULED, State.IN_PROGRESS})
# States in which the patient and doctor are still working together (documents readable).
OPEN = frozenset({State.REQUESTED, State.SCHEDULED, State.IN_PROGRESS, State.COMPLETED})
FINAL = frozenset({State.CONCLUDED, State.CANCELLED, State.DECLINED, State.NO_SHOW})


@dataclass(frozen=True)
class Moved:
    """A committed move of a consultation, for the parts of the system that act on it
    (``live.happened``): the video room closes when ``target`` is not ``LIVE``."""

    consultation_id: uuid.UUID
    move: Move
    source: State
    target: State


def check_move(state: State, move: Move, party: Party) -> State:
    """The state ``move`` leads to; raises ``Forbidden`` if ``party`` may never make it,
    ``InvalidState`` if it cannot be made from ``state``."""
    transition = TRANSITIONS[move]
    if party not in transition.parties:
        raise Forbidden(
            f"A {party.value} cannot {move.value.replace('_', ' ')} a consultation",
            details={"move": move.value},
        )
    if state not in transition.sources:
        raise InvalidState(
            f"A {state.value.replace('_', ' ')} consultation cannot be {past(move)}",
            details={
                "state": state.value,
                "move": move.value,
                "allowed_from": sorted(s.value for s in transition.sources),
            },
        )
    return transition.target


def allowed_moves(state: State, party: Party) -> list[Move]:
    """The moves ``party`` can make now (for clients to show the right buttons)."""
    return [
        move
        for move, transition in TRANSITIONS.items()
        if party in transition.parties and state in transition.sources
    ]


def past(move: Move) -> str:
    """The move in the past tense (``schedule`` → ``scheduled``): audit actions say it."""
    return _PAST[move]


_PAST = {
    Move.SCHEDULE: "scheduled",
    Move.RESCHEDULE: "rescheduled",
    Move.DECLINE: "declined",
    Move.CANCEL: "cancelled",
    Move.START: "started",
    Move.END: "ended",
    Move.CONCLUDE: "concluded",
    Move.AMEND: "amended",
    Move.MARK_NO_SHOW: "marked as a no-show",
}
