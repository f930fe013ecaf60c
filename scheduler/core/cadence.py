"""When each stakeholder hears from us next: pure functions of their inputs and ``now``.

Cadences are exact durations (a 1h cadence means 3600 s later, whatever the wall clock
does). Quiet hours and business hours are wall-clock windows in the stakeholder's own
time zone, so they move with daylight saving time. All datetimes in and out are aware;
results are in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import pendulum

from scheduler.core.config import Config, Stakeholder
from scheduler.core.durations import TimeWindow

__all__ = [
    "Policy",
    "defer_quiet_hours",
    "feedback_at",
    "next_update_at",
    "policy_for",
    "replan_update_at",
]

_WEEKEND = (5, 6)  # Saturday, Sunday
_WHOLE_MINUTES_FROM_S = 60
"""Cadences this long promise whole minutes ("by 14:30"), rounded up so the promise holds."""


@dataclass(frozen=True)
class Policy:
    """Everything that decides one stakeholder's timing, resolved from the configuration."""

    timezone: str
    cadence_s: Mapping[str, int]
    feedback_after_s: int
    quiet_hours: TimeWindow | None = None
    quiet_hours_override: frozenset[str] = field(default_factory=frozenset)
    business_hours: TimeWindow | None = None


def policy_for(config: Config, stakeholder: Stakeholder) -> Policy:
    return Policy(
        timezone=config.timezone_of(stakeholder),
        cadence_s={s: config.cadence_s(stakeholder, s) for s in config.defaults.cadence},
        feedback_after_s=config.feedback_after_s(stakeholder),
        quiet_hours=config.quiet_hours_of(stakeholder),
        quiet_hours_override=frozenset(
            s for s in config.defaults.cadence if config.overrides_quiet_hours(stakeholder, s)
        ),
        business_hours=config.business_hours,
    )


def _require_aware(*moments: datetime) -> None:
    for moment in moments:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{moment!r} is naive; cadence times must carry a time zone")


def _wall(day: date, clock: time, tz: str) -> datetime:
    # pendulum moves a wall time that does not exist (spring forward) to the next real one
    local = pendulum.datetime(day.year, day.month, day.day, clock.hour, clock.minute, tz=tz)
    return local.astimezone(UTC)


def _window_end(window: TimeWindow, local: datetime, tz: str) -> datetime:
    """The end of the occurrence of ``window`` that contains the local moment ``local``."""
    day = local.date()
    if window.start > window.end and local.time() >= window.start:
        day += timedelta(days=1)  # a window that wraps past midnight ends tomorrow
    return _wall(day, window.end, tz)


def defer_quiet_hours(policy: Policy, severity: str, at: datetime) -> datetime:
    """``at`` moved to the end of the stakeholder's quiet hours when it falls inside them.

    A severity listed in ``quiet_hours_override`` is never deferred.
    """
    _require_aware(at)
    at = at.astimezone(UTC)
    window = policy.quiet_hours
    if window is None or severity in policy.quiet_hours_override:
        return at
    local = pendulum.instance(at).in_tz(policy.timezone)
    if not window.contains(local.time()):
        return at
    return max(at, _window_end(window, local, policy.timezone))


def next_update_at(policy: Policy, severity: str, last_sent: datetime, now: datetime) -> datetime:
    """When the next regular update is due after a message sent (composed) at ``last_sent``.

    One cadence after ``last_sent``, never before ``now``, deferred out of quiet hours.
    Cadences of a minute or more round up to the next whole minute, because that is
    the time the message states ("next update by 14:31").
    """
    _require_aware(last_sent, now)
    cadence_s = policy.cadence_s[severity]
    due = max(last_sent + timedelta(seconds=cadence_s), now).astimezone(UTC)
    if cadence_s >= _WHOLE_MINUTES_FROM_S and (due.second or due.microsecond):
        due = due.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return defer_quiet_hours(policy, severity, due)


def replan_update_at(
    policy: Policy, severity: str, last_sent: datetime, promised: datetime | None, now: datetime
) -> datetime:
    """The next update after the cadence changed (new severity or new configuration).

    A shorter cadence brings the update forward; a longer one never pushes it past a
    time already promised to the stakeholder.
    """
    planned = next_update_at(policy, severity, last_sent, now)
    if promised is None:
        return planned
    _require_aware(promised)
    return min(planned, max(promised.astimezone(UTC), now.astimezone(UTC)))


def _next_business_start(window: TimeWindow, local: datetime, tz: str) -> datetime:
    day = local.date()
    if local.time() >= window.start and not (window.start > window.end and local.time() < window.end):
        day += timedelta(days=1)
    while day.weekday() in _WEEKEND:
        day += timedelta(days=1)
    return _wall(day, window.start, tz)


def feedback_at(policy: Policy, resolved_at: datetime) -> datetime:
    """When to ask for feedback: ``feedback_after`` past resolution, inside business hours.

    Business hours are the configured window on weekdays (Monday to Friday) in the
    stakeholder's time zone; a time outside them moves to the next opening.
    """
    _require_aware(resolved_at)
    at = resolved_at.astimezone(UTC) + timedelta(seconds=policy.feedback_after_s)
    window = policy.business_hours
    if window is None:
        return at
    local = pendulum.instance(at).in_tz(policy.timezone)
    if window.contains(local.time()) and local.weekday() not in _WEEKEND:
        return at
    return _next_business_start(window, local, policy.timezone)
