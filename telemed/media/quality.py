"""How a participant's call went (docs/media.md, "Call quality").

Every few seconds a client reports its ``getStats`` figures of the last interval and
its level for them (``media:stats``); the server adds what it sees of the participant's
upload (packets lost on the way to it) and keeps a summary: time at each level, freezes,
the worst moment, time through TURN, time on audio only. Pure: the room feeds it the
reports, the time and its own figures.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

LEVELS = ("good", "weak", "poor")
LONGEST_INTERVAL = 10.0
"""Seconds a report may stand for at most (a client that went quiet is not counted on)."""
UPLOAD_WEAK = 0.03
UPLOAD_POOR = 0.10
"""Loss of the participant's upload (the server's own figure) that makes a level weak,
or poor, whatever the client says."""


def level_of(client_level: str, upload_loss: float | None) -> str:
    """The worse of the client's level and the one the server's figure gives."""
    rank = LEVELS.index(client_level)
    if upload_loss is not None:
        if upload_loss >= UPLOAD_POOR:
            rank = max(rank, 2)
        elif upload_loss >= UPLOAD_WEAK:
            rank = max(rank, 1)
    return LEVELS[rank]


@dataclass
class QualitySummary:
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0.0))
    freezes: int = 0
    freeze_seconds: float = 0.0
    relay_seconds: float = 0.0
    audio_only_seconds: float = 0.0
    worst: dict[str, Any] | None = None
    """The first interval at the worst level seen: its level, moment and figures."""
    reports: int = 0

    def since(self, before: QualitySummary) -> QualitySummary:
        """What was added after ``before`` (an earlier copy of this summary); the worst
        moment only if it is a new one."""
        return QualitySummary(
            seconds={k: v - before.seconds[k] for k, v in self.seconds.items()},
            freezes=self.freezes - before.freezes,
            freeze_seconds=self.freeze_seconds - before.freeze_seconds,
            relay_seconds=self.relay_seconds - before.relay_seconds,
            audio_only_seconds=self.audio_only_seconds - before.audio_only_seconds,
            worst=self.worst if self.worst != before.worst else None,
            reports=self.reports - before.reports,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "freezes": self.freezes,
            "freeze_seconds": round(self.freeze_seconds, 1),
            "relay_seconds": round(self.relay_seconds, 1),
            "audio_only_seconds": round(self.audio_only_seconds, 1),
            "worst": self.worst,
            "reports": self.reports,
        }


@dataclass
class CallQuality:
    """One participant's quality in one room."""

    level: str | None = None
    summary: QualitySummary = field(default_factory=QualitySummary)
    _last_report: float | None = None
    _freezes_before: int = 0
    """Freezes of the participant's earlier connections (a client's totals restart)."""
    _freeze_seconds_before: float = 0.0
    _last_freezes: int = 0
    _last_freeze_seconds: float = 0.0
    _upload: tuple[int, int] | None = None
    """The server's last (packets lost, packets expected) of the participant's upload."""
    _saved: QualitySummary = field(default_factory=QualitySummary)
    """The summary as it was last stored (``unsaved``)."""

    def unsaved(self) -> QualitySummary | None:
        """What the summary gained since the last call (None: nothing), which the caller
        then stores."""
        saved = self._saved
        if saved.reports == self.summary.reports:
            return None
        self._saved = copy.deepcopy(self.summary)
        return self.summary.since(saved)

    def upload_loss(self, lost: int, expected: int) -> float | None:
        """The participant's upload loss since the last call, from the server's running
        counters (None: nothing new)."""
        before = self._upload
        self._upload = (lost, expected)
        if before is None or expected < before[1]:
            return None  # the first figures, or a new connection
        sent = expected - before[1]
        return max(0, lost - before[0]) / sent if sent > 0 else None

    def report(
        self,
        figures: dict[str, Any],
        *,
        now: float,
        moment: datetime,
        audio_only: bool,
        upload_loss: float | None,
    ) -> bool:
        """A client's report (``media:stats`` figures); ``now`` monotonic seconds,
        ``moment`` the app's time. Returns whether the level changed."""
        level = level_of(figures["level"], upload_loss)
        summary = self.summary
        if self._last_report is not None:
            seconds = min(now - self._last_report, LONGEST_INTERVAL)
            summary.seconds[level] += seconds
            if figures.get("relay"):
                summary.relay_seconds += seconds
            if audio_only:
                summary.audio_only_seconds += seconds
        self._last_report = now
        summary.reports += 1
        freezes, freeze_seconds = int(figures["freezes"]), float(figures["freeze_seconds"])
        if freezes < self._last_freezes or freeze_seconds < self._last_freeze_seconds:
            self._freezes_before += self._last_freezes
            self._freeze_seconds_before += self._last_freeze_seconds
        self._last_freezes, self._last_freeze_seconds = freezes, freeze_seconds
        summary.freezes = self._freezes_before + freezes
        summary.freeze_seconds = self._freeze_seconds_before + freeze_seconds
        worst = summary.worst
        if worst is None or LEVELS.index(level) > LEVELS.index(worst["level"]):
            summary.worst = {
                "level": level,
                "at": moment.isoformat(),
                "upload_loss": upload_loss,
                **{k: figures.get(k) for k in ("rtt_ms", "loss", "video_fps", "concealed")},
            }
        changed = level != self.level
        self.level = level
        return changed
