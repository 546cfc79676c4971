"""A participant's call quality (telemed.media.quality): levels, the summary's time at
each level, freezes across reconnections, the worst moment, the server's own figure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from telemed.media.quality import LONGEST_INTERVAL, CallQuality, level_of

START = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def figures(level: str = "good", **more: Any) -> dict[str, Any]:
    return {"level": level, "freezes": 0, "freeze_seconds": 0.0, "relay": False, **more}


def test_the_server_figure_can_only_make_a_level_worse() -> None:
    assert level_of("good", None) == "good"
    assert level_of("good", 0.01) == "good"
    assert level_of("good", 0.05) == "weak"
    assert level_of("weak", 0.2) == "poor"
    assert level_of("poor", 0.0) == "poor"


def test_the_summary_counts_time_by_level_freezes_and_the_worst_moment() -> None:
    quality = CallQuality()

    def report(at: float, data: dict[str, Any], **kwargs: Any) -> bool:
        return quality.report(
            data,
            now=at,
            moment=START + timedelta(seconds=at),
            audio_only=kwargs.get("audio_only", False),
            upload_loss=kwargs.get("upload_loss"),
        )

    assert report(0, figures())  # the first level is a change
    assert not report(2, figures(relay=True))
    assert report(4, figures("weak", rtt_ms=600, freezes=1, freeze_seconds=0.4))
    assert report(6, figures("poor", loss=0.2, freezes=2, freeze_seconds=1.0), audio_only=True)
    # A new connection: the client's totals start again from zero.
    assert report(8, figures("good", freezes=1, freeze_seconds=0.3))
    assert not report(8 + 60, figures("good", freezes=1, freeze_seconds=0.3))  # a long gap
    summary = quality.summary.as_dict()
    assert summary["seconds"] == {"good": 4 + LONGEST_INTERVAL, "weak": 2, "poor": 2}
    assert summary["relay_seconds"] == 2
    assert summary["audio_only_seconds"] == 2
    assert summary["freezes"] == 3
    assert summary["freeze_seconds"] == 1.3
    assert summary["worst"]["level"] == "poor"
    assert summary["worst"]["loss"] == 0.2
    assert summary["worst"]["at"] == (START + timedelta(seconds=6)).isoformat()
    assert summary["reports"] == 6


def test_the_upload_loss_comes_from_the_servers_running_counts() -> None:
    quality = CallQuality()
    assert quality.upload_loss(0, 100) is None  # the first counts
    assert quality.upload_loss(5, 200) == 0.05
    assert quality.upload_loss(5, 200) is None  # nothing new
    assert quality.upload_loss(0, 50) is None  # a new connection: counts restart
    assert quality.upload_loss(0, 150) == 0.0
