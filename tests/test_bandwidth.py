"""A viewer's link (telemed.media.bandwidth): when video pauses, is tried again, comes
back, and what publishers are held to."""

from __future__ import annotations

from telemed.media.bandwidth import (
    FIRST_RETRY,
    LAST_RETRY,
    LEAST,
    PAUSE_AFTER,
    TRIAL,
    Reason,
    Receiving,
    ViewerLink,
    publisher_limit,
)

FLOOR = 150_000


def test_a_link_under_the_floor_for_a_while_gets_audio_only() -> None:
    link = ViewerLink(floor=FLOOR)
    link.observe(400_000, 0.0)
    assert not link.tick(1.0)
    assert link.cap(publishers=1) == 360_000
    link.observe(100_000, 1.0)
    assert not link.tick(1.0 + PAUSE_AFTER / 2)  # a dip is not enough
    link.observe(200_000, 2.0)  # back over the floor: the clock starts again
    link.observe(90_000, 3.0)
    assert not link.tick(3.0 + PAUSE_AFTER - 0.1)
    assert link.tick(3.0 + PAUSE_AFTER)
    assert not link.video
    assert link.reason is Reason.NETWORK
    assert link.cap(publishers=1) is None  # no video to it: it holds no publisher back


def state_of(link: ViewerLink) -> Receiving:
    return link.state


def paused(at: float) -> ViewerLink:
    link = ViewerLink(floor=FLOOR)
    link.observe(80_000, at - PAUSE_AFTER)
    assert link.tick(at)
    return link


def test_video_is_tried_again_and_kept_when_the_link_carries_it() -> None:
    link = paused(10.0)
    assert not link.tick(10.0 + FIRST_RETRY - 0.1)
    assert link.tick(10.0 + FIRST_RETRY)  # a try: video again, at a low rate
    assert state_of(link) is Receiving.TRYING
    assert link.video
    assert link.cap(publishers=1) == 2 * FLOOR
    link.observe(int(1.3 * FLOOR), 10.0 + FIRST_RETRY + 1)
    assert not link.tick(10.0 + FIRST_RETRY + TRIAL)
    assert state_of(link) is Receiving.VIDEO
    assert link.cap(publishers=2) == int(0.9 * 1.3 * FLOOR / 2)


def test_failed_tries_wait_longer_up_to_a_limit() -> None:
    link = paused(0.0)
    now, waits = 0.0, []
    for _ in range(4):
        start = now
        while not link.tick(now):
            now += 0.5
        waits.append(now - start)  # until the try
        link.observe(60_000, now)
        now += TRIAL
        assert link.tick(now)  # judged: still too little, audio only again
        assert not link.video
    assert waits == [FIRST_RETRY, min(2 * FIRST_RETRY, LAST_RETRY), LAST_RETRY, LAST_RETRY]


def test_the_viewers_own_choice_wins() -> None:
    link = ViewerLink(floor=FLOOR)
    link.observe(2_000_000, 0.0)
    assert link.choose_audio_only(True)
    assert not link.video
    assert link.reason is Reason.CHOSEN
    assert link.cap(publishers=1) is None
    assert not link.choose_audio_only(True)
    assert link.choose_audio_only(False)
    assert link.video
    assert link.reason is None


def test_publishers_follow_the_weakest_viewer_never_below_the_least() -> None:
    assert publisher_limit(2_000_000, [None, 500_000, 800_000]) == 500_000
    assert publisher_limit(300_000, [500_000]) == 300_000  # its own link is the limit
    assert publisher_limit(900_000, [None]) == 900_000
    link = ViewerLink(floor=FLOOR)
    link.observe(40_000, 0.0)
    assert link.cap(publishers=1) == LEAST
