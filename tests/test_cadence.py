"""Cadence, quiet hours, business hours and promises: tables of aware datetimes, DST days included.

DST in 2026: America/New_York springs forward on 8 March (02:00 EST -> 03:00 EDT, 07:00 UTC)
and falls back on 1 November (02:00 EDT -> 01:00 EST, 06:00 UTC); Europe/Berlin springs
forward on 29 March (02:00 CET -> 03:00 CEST, 01:00 UTC) and falls back on 25 October
(03:00 CEST -> 02:00 CET, 01:00 UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler.core.cadence import Policy, feedback_at, next_update_at, replan_update_at
from scheduler.core.durations import parse_window
from scheduler.mail.render import local_time


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def policy(
    tz: str,
    cadence_s: int = 3600,
    quiet: str | None = None,
    override: tuple[str, ...] = (),
    feedback_after_s: int = 7200,
    business: str | None = None,
) -> Policy:
    return Policy(
        timezone=tz,
        cadence_s={"sev1": cadence_s, "sev2": cadence_s},
        feedback_after_s=feedback_after_s,
        quiet_hours=parse_window(quiet) if quiet else None,
        quiet_hours_override=frozenset(override),
        business_hours=parse_window(business) if business else None,
    )


NY, BERLIN = "America/New_York", "Europe/Berlin"

NEXT_UPDATE_CASES = [
    # (case, policy, severity, last sent, expected due, expected local text)
    (
        "NY spring forward: 1h is 3600 s, wall clock jumps 2h",
        policy(NY),
        "sev2",
        utc(2026, 3, 8, 6, 30),
        utc(2026, 3, 8, 7, 30),
        "03:30 EDT",
    ),
    (
        "NY fall back: 01:30 EDT + 1h = 01:30 EST",
        policy(NY),
        "sev2",
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6, 30),
        "01:30 EST",
    ),
    (
        "Berlin spring forward: 01:30 CET + 1h = 03:30 CEST",
        policy(BERLIN),
        "sev2",
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 1, 30),
        "03:30 CEST",
    ),
    (
        "Berlin fall back: 02:30 CEST + 1h = 02:30 CET",
        policy(BERLIN),
        "sev2",
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1, 30),
        "02:30 CET",
    ),
    (
        "Berlin quiet hours over spring forward end at 07:00 CEST",
        policy(BERLIN, quiet="22:00-07:00"),
        "sev2",
        utc(2026, 3, 28, 20, 30),
        utc(2026, 3, 29, 5, 0),
        "07:00 CEST",
    ),
    (
        "Berlin quiet hours over fall back end at 07:00 CET",
        policy(BERLIN, quiet="22:00-07:00"),
        "sev2",
        utc(2026, 10, 24, 20, 30),
        utc(2026, 10, 25, 6, 0),
        "07:00 CET",
    ),
    (
        "NY quiet hours over spring forward end at 07:00 EDT",
        policy(NY, quiet="22:00-07:00"),
        "sev2",
        utc(2026, 3, 8, 2, 30),
        utc(2026, 3, 8, 11, 0),
        "07:00 EDT",
    ),
    (
        "NY quiet hours over fall back end at 07:00 EST",
        policy(NY, cadence_s=900, quiet="22:00-07:00"),
        "sev2",
        utc(2026, 11, 1, 2, 30),
        utc(2026, 11, 1, 12, 0),
        "07:00 EST",
    ),
    (
        "a severity that overrides quiet hours is not deferred",
        policy(BERLIN, quiet="22:00-07:00", override=("sev1",)),
        "sev1",
        utc(2026, 3, 28, 20, 30),
        utc(2026, 3, 28, 21, 30),
        "22:30 CET",
    ),
    (
        "a cadence straddling midnight lands on the next local day",
        policy(BERLIN, cadence_s=1800),
        "sev2",
        utc(2026, 11, 26, 22, 50),
        utc(2026, 11, 26, 23, 20),
        "00:20 CET",
    ),
    (
        "after midnight into a window that does not wrap",
        policy(BERLIN, cadence_s=900, quiet="01:00-05:00"),
        "sev2",
        utc(2026, 11, 26, 23, 50),
        utc(2026, 11, 27, 4, 0),
        "05:00 CET",
    ),
    (
        "a quiet window ending at a wall time DST skips ends at the first real time after it",
        policy(NY, cadence_s=900, quiet="00:00-02:30"),
        "sev2",
        utc(2026, 3, 8, 5, 30),
        utc(2026, 3, 8, 7, 30),
        "03:30 EDT",
    ),
    (
        "just before quiet hours is not deferred",
        policy(NY, cadence_s=900, quiet="22:00-07:00"),
        "sev2",
        utc(2026, 11, 27, 2, 44),
        utc(2026, 11, 27, 2, 59),
        "21:59 EST",
    ),
    (
        "minute cadences round up to the whole minute they promise",
        policy(BERLIN, cadence_s=900),
        "sev2",
        utc(2026, 11, 26, 14, 3, 5),
        utc(2026, 11, 26, 14, 19),
        "15:19 CET",
    ),
    (
        "a two-minute cadence promises, and is armed for, the whole minute it states",
        policy(BERLIN, cadence_s=120),
        "sev2",
        utc(2026, 11, 26, 14, 3, 5),
        utc(2026, 11, 26, 14, 6),
        "15:06 CET",
    ),
    (
        "second cadences stay exact",
        policy(BERLIN, cadence_s=8),
        "sev2",
        utc(2026, 11, 26, 14, 3, 5),
        utc(2026, 11, 26, 14, 3, 13),
        "15:03:13 CET",
    ),
]


@pytest.mark.parametrize(
    ("case", "p", "severity", "last", "due", "local"),
    NEXT_UPDATE_CASES,
    ids=[c[0] for c in NEXT_UPDATE_CASES],
)
def test_next_update_time(
    case: str, p: Policy, severity: str, last: datetime, due: datetime, local: str
) -> None:
    """The next update is one cadence after the last message, moved out of quiet hours, shown in local time."""
    got = next_update_at(p, severity, last, last)
    assert got == due
    assert local_time(got, p.timezone, got) == local


def test_last_sent_may_be_given_in_any_zone() -> None:
    """The same instant written in another zone gives the same due time."""
    p = policy(NY, quiet="22:00-07:00")
    last = utc(2026, 3, 8, 2, 30)
    assert next_update_at(p, "sev2", last.astimezone(ZoneInfo("Asia/Tokyo")), last) == utc(2026, 3, 8, 11, 0)


def test_never_due_before_now() -> None:
    """When the last message is long past, the next update is due now, not in the past."""
    now = utc(2026, 11, 26, 14, 0)
    assert next_update_at(policy(BERLIN), "sev2", now - timedelta(hours=5), now) == now


def test_naive_datetimes_are_refused() -> None:
    """Naive datetimes are a programming error: the policy refuses them."""
    with pytest.raises(ValueError, match="naive"):
        next_update_at(policy(BERLIN), "sev2", datetime(2026, 1, 1), utc(2026, 1, 1))


REPLAN_CASES = [
    (
        "a shorter cadence brings the update forward",
        900,
        utc(2026, 11, 26, 14, 0),
        utc(2026, 11, 26, 15, 0),
        utc(2026, 11, 26, 14, 5),
        utc(2026, 11, 26, 14, 15),
    ),
    (
        "a longer cadence keeps the promise already made",
        4 * 3600,
        utc(2026, 11, 26, 14, 0),
        utc(2026, 11, 26, 14, 30),
        utc(2026, 11, 26, 14, 5),
        utc(2026, 11, 26, 14, 30),
    ),
    (
        "an overdue promise is due now",
        4 * 3600,
        utc(2026, 11, 26, 14, 0),
        utc(2026, 11, 26, 14, 30),
        utc(2026, 11, 26, 14, 40),
        utc(2026, 11, 26, 14, 40),
    ),
    (
        "nothing promised yet: the cadence decides",
        900,
        utc(2026, 11, 26, 14, 0),
        None,
        utc(2026, 11, 26, 14, 5),
        utc(2026, 11, 26, 14, 15),
    ),
]


@pytest.mark.parametrize(
    ("case", "cadence_s", "last", "promised", "now", "expected"),
    REPLAN_CASES,
    ids=[c[0] for c in REPLAN_CASES],
)
def test_replanning_never_breaks_a_promise(
    case: str, cadence_s: int, last: datetime, promised: datetime | None, now: datetime, expected: datetime
) -> None:
    """A new cadence moves the next update earlier but never later than what was promised."""
    assert replan_update_at(policy(BERLIN, cadence_s=cadence_s), "sev2", last, promised, now) == expected


FEEDBACK_CASES = [
    (
        "no business hours: exactly feedback_after later",
        policy(BERLIN),
        utc(2026, 11, 27, 15, 0),
        utc(2026, 11, 27, 17, 0),
    ),
    (
        "inside business hours stays",
        policy(NY, business="09:00-17:00"),
        utc(2026, 3, 10, 12, 0),
        utc(2026, 3, 10, 14, 0),
    ),
    (
        "Friday evening moves to Monday morning",
        policy(BERLIN, business="09:00-17:00"),
        utc(2026, 11, 27, 15, 0),
        utc(2026, 11, 30, 8, 0),
    ),
    (
        "before opening moves to opening the same day",
        policy(BERLIN, business="09:00-17:00"),
        utc(2026, 11, 25, 4, 0),
        utc(2026, 11, 25, 8, 0),
    ),
    (
        "Berlin spring-forward Sunday moves to Monday 09:00 CEST",
        policy(BERLIN, business="09:00-17:00", feedback_after_s=86400),
        utc(2026, 3, 28, 12, 0),
        utc(2026, 3, 30, 7, 0),
    ),
    (
        "NY fall-back Sunday moves to Monday 09:00 EST",
        policy(NY, business="09:00-17:00", feedback_after_s=86400),
        utc(2026, 10, 31, 15, 0),
        utc(2026, 11, 2, 14, 0),
    ),
    (
        "NY spring-forward Sunday night moves to Monday 09:00 EDT",
        policy(NY, business="09:00-17:00"),
        utc(2026, 3, 8, 23, 0),
        utc(2026, 3, 9, 13, 0),
    ),
]


@pytest.mark.parametrize(
    ("case", "p", "resolved", "expected"), FEEDBACK_CASES, ids=[c[0] for c in FEEDBACK_CASES]
)
def test_feedback_requests_land_in_business_hours(
    case: str, p: Policy, resolved: datetime, expected: datetime
) -> None:
    """The feedback request is feedback_after past resolution, moved into weekday business hours."""
    assert feedback_at(p, resolved) == expected
