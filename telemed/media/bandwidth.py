"""What a viewer can receive, and so what its publishers may send (docs/media.md,
"Bandwidth").

The relay forwards packets as they come, so a publisher's bitrate is what the viewer
gets. Each viewer's browser estimates what its link carries and says so in REMB
messages (Chromium sends them when transport-wide congestion control is not
negotiated, which the server never offers); the relay passes the weakest viewer's
figure on to the publisher in its own REMB, and the publisher's encoder follows.

Below a floor a viewer's video is paused (audio only) rather than frozen. A paused
viewer's estimate cannot show that its link came back (a receiver's estimate never
goes much above what it receives), so video is tried again every few seconds, at a
low rate, and kept if the estimate then clears the floor with a margin. A viewer may
also choose audio only itself.

Pure: the room feeds it estimates and the time, and applies what it answers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

PAUSE_AFTER = 2.0
"""Seconds an estimate must stay under the floor before video is paused."""
FIRST_RETRY = 3.0
"""Seconds of audio only before video is first tried again."""
LAST_RETRY = 4.0
"""The longest wait between two tries (each failed try doubles the wait, up to this)."""
TRIAL = 3.0
"""Seconds a try lasts before it is judged."""
RESUME_MARGIN = 1.3
"""A try keeps video when the estimate is at least this many times the floor."""
PROBE_FLOORS = 2.0
"""During a try, publishers are held to this many times the floor."""
SHARE = 0.9
"""Of a viewer's estimate, what its publishers may use (the rest: headroom)."""
LEAST = 50_000
"""No publisher is asked to go below this (bits/s): its audio must still get through."""


class Receiving(enum.StrEnum):
    VIDEO = "video"
    AUDIO_ONLY = "audio_only"
    TRYING = "trying"
    """Video again for a try, at a low rate."""


class Reason(enum.StrEnum):
    NETWORK = "network"
    CHOSEN = "chosen"


@dataclass
class ViewerLink:
    """One viewer's link: its latest estimate and whether it gets video."""

    floor: int
    """Bits/s under which video is paused (``TELEMED_MEDIA_VIDEO_FLOOR_KBPS``)."""
    state: Receiving = Receiving.VIDEO
    chosen_audio_only: bool = False
    estimate: int | None = None
    """The viewer's last REMB, bits/s."""
    _under_since: float | None = None
    _next_try: float = 0.0
    _try_started: float = 0.0
    _retry: float = FIRST_RETRY

    @property
    def video(self) -> bool:
        """Whether the viewer is sent video now."""
        return not self.chosen_audio_only and self.state != Receiving.AUDIO_ONLY

    @property
    def reason(self) -> Reason | None:
        """Why the viewer gets no video (None: it does)."""
        if self.chosen_audio_only:
            return Reason.CHOSEN
        return Reason.NETWORK if self.state == Receiving.AUDIO_ONLY else None

    def observe(self, estimate: int, now: float) -> None:
        """A REMB from the viewer."""
        self.estimate = estimate
        if estimate >= self.floor:
            self._under_since = None
        elif self._under_since is None:
            self._under_since = now

    def tick(self, now: float) -> bool:
        """Move on with time; returns whether ``video`` changed."""
        before = self.video
        if self.state == Receiving.VIDEO:
            if self._under_since is not None and now - self._under_since >= PAUSE_AFTER:
                self.state = Receiving.AUDIO_ONLY
                self._next_try = now + self._retry
        elif self.state == Receiving.AUDIO_ONLY:
            if now >= self._next_try:
                self.state = Receiving.TRYING
                self._try_started = now
                self._under_since = None
        elif now - self._try_started >= TRIAL:
            if (self.estimate or 0) >= RESUME_MARGIN * self.floor:
                self.state = Receiving.VIDEO
                self._retry = FIRST_RETRY
            else:
                self.state = Receiving.AUDIO_ONLY
                self._retry = min(2 * self._retry, LAST_RETRY)
                self._next_try = now + self._retry
        return self.video != before

    def choose_audio_only(self, active: bool) -> bool:
        """The viewer's own choice; returns whether ``video`` changed."""
        before = self.video
        self.chosen_audio_only = active
        return self.video != before

    def cap(self, publishers: int) -> int | None:
        """What each of the ``publishers`` this viewer receives video from may send it
        (bits/s), or None: this viewer sets no limit (it gets no video, or has not said
        what it can take yet)."""
        if not self.video:
            return None
        if self.state == Receiving.TRYING:
            return int(PROBE_FLOORS * self.floor)
        if self.estimate is None:
            return None
        return max(LEAST, int(SHARE * self.estimate / max(1, publishers)))


def publisher_limit(own: int, caps: list[int | None]) -> int:
    """The REMB the relay sends a publisher: its own estimate of the publisher's link,
    lowered to what the weakest of its viewers can take."""
    limits = [cap for cap in caps if cap is not None]
    return min([own, *limits])
