"""Times in messages: the day when it is not the reader's today, seconds only for a cadence under a minute."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scheduler.core.config import Config, parse_config
from scheduler.mail.messages import template_context
from scheduler.mail.preflight import sample_communication
from scheduler.mail.render import TemplateSet, message_time
from scheduler.service.settings import bundled_path

TEMPLATES = TemplateSet(bundled_path("templates"))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "zone", "today", "seconds", "promise", "expected"),
    [
        # the same local day, whole minutes; a promise rounds up so that it holds
        (utc(2026, 12, 3, 7, 21, 22), "Europe/Berlin", utc(2026, 12, 3, 7, 20), False, True, "08:22 CET"),
        (utc(2026, 12, 3, 7, 21, 22), "Europe/Berlin", utc(2026, 12, 3, 7, 20), False, False, "08:21 CET"),
        (utc(2026, 12, 3, 7, 21, 22), "Europe/Berlin", utc(2026, 12, 3, 7, 20), True, True, "08:21:22 CET"),
        (utc(2026, 12, 3, 7, 21), "Europe/Berlin", utc(2026, 12, 3, 7, 20), False, True, "08:21 CET"),
        # the reader's tomorrow and yesterday, though UTC is still on the same day
        (
            utc(2026, 12, 3, 23, 30),
            "Europe/Berlin",
            utc(2026, 12, 3, 22, 0),
            False,
            True,
            "00:30 CET tomorrow",
        ),
        (utc(2026, 12, 3, 15, 0), "Asia/Tokyo", utc(2026, 12, 3, 14, 50), False, False, "00:00 JST tomorrow"),
        (
            utc(2026, 12, 2, 22, 50),
            "Europe/Berlin",
            utc(2026, 12, 3, 8, 0),
            False,
            False,
            "23:50 CET yesterday",
        ),
        # further away: weekday and date; another year also names the year
        (
            utc(2026, 12, 1, 7, 21),
            "Europe/Berlin",
            utc(2026, 12, 3, 8, 0),
            False,
            False,
            "Tue 1 Dec 08:21 CET",
        ),
        (
            utc(2027, 1, 1, 8, 0),
            "Europe/Berlin",
            utc(2026, 12, 30, 8, 0),
            False,
            True,
            "Fri 1 Jan 2027 09:00 CET",
        ),
        # across the DST changes: the zone's name follows the moment, the day the reader's calendar
        (utc(2026, 3, 29, 1, 30), "Europe/Berlin", utc(2026, 3, 29, 0, 30), False, True, "03:30 CEST"),
        (utc(2026, 10, 25, 1, 30), "Europe/Berlin", utc(2026, 10, 24, 23, 30), False, True, "02:30 CET"),
        (
            utc(2026, 10, 25, 0, 30),
            "Europe/Berlin",
            utc(2026, 10, 24, 21, 30),
            False,
            True,
            "02:30 CEST tomorrow",
        ),
        (utc(2026, 11, 1, 6, 30), "America/New_York", utc(2026, 11, 1, 5, 10), False, True, "01:30 EST"),
        (
            utc(2026, 11, 1, 5, 30),
            "America/New_York",
            utc(2026, 10, 31, 12, 0),
            False,
            True,
            "01:30 EDT tomorrow",
        ),
        (utc(2026, 3, 8, 7, 0, 1), "America/New_York", utc(2026, 3, 8, 6, 0), False, True, "03:01 EDT"),
        # a moment given in another offset is shown in the reader's zone
        (
            datetime(2026, 12, 3, 9, 21, tzinfo=timezone(timedelta(hours=2))),
            "Europe/London",
            utc(2026, 12, 3, 6, 0),
            False,
            False,
            "07:21 GMT",
        ),
    ],
)
def test_message_times_carry_the_day_when_it_is_not_the_readers_today(
    moment: datetime, zone: str, today: datetime, seconds: bool, promise: bool, expected: str
) -> None:
    """A time reads as the reader's clock and calendar: the day when not today, seconds only when asked for."""
    assert message_time(moment, zone, today, seconds=seconds, promise=promise) == expected


def _config(cadence: str) -> Config:
    return parse_config(
        {
            "sender": "Acme Status <status@acme.example>",
            "stakeholders": [
                {
                    "id": "c",
                    "name": "ACME Finance",
                    "email": "c@acme.example",
                    "audience": "customer",
                    "timezone": "Europe/Berlin",
                    "cadence": {"sev1": cadence},
                }
            ],
        }
    )


@pytest.mark.parametrize(
    ("cadence", "promise"), [("30s", "08:21:22 CET tomorrow"), ("1m", "08:22 CET tomorrow")]
)
def test_a_next_update_on_the_readers_next_day_says_tomorrow_with_seconds_only_below_a_minute(
    cadence: str, promise: str
) -> None:
    """An update written late in the evening promises the next one "by 08:22 CET tomorrow"; seconds only for a 30 s cadence."""
    config = _config(cadence)
    stakeholder = config.stakeholders[0]
    now = utc(2026, 12, 2, 22, 50, 7)
    comm = sample_communication("update", "c", "Europe/Berlin", now)
    comm = dataclasses.replace(comm, next_update_at=utc(2026, 12, 3, 7, 21, 22))
    context = template_context(comm, stakeholder, config, now, "secret")
    rendered = TEMPLATES.render("customer", "update", context)
    assert f"Next update by {promise}, even if nothing has changed by then." in rendered.text
    assert context["since"] == ("23:35:07 CET" if cadence == "30s" else "23:35 CET")
