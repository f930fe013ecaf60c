"""Each audience's average rating over a window is a pure function of the ratings and ``now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.core.ratings import RatingRow, averages

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def _row(audience: str, rating: int, days_ago: float, stakeholder: str = "s") -> RatingRow:
    return RatingRow(f"INC-{days_ago}", stakeholder, audience, rating, NOW - timedelta(days=days_ago))


@pytest.mark.parametrize(
    ("rows", "days", "expected"),
    [
        ([], 30, {}),
        ([_row("customer", 2, 1), _row("customer", 5, 29)], 30, {"customer": (3.5, 2)}),
        ([_row("customer", 2, 1), _row("customer", 5, 31)], 30, {"customer": (2.0, 1)}),
        ([_row("customer", 2, 1), _row("customer", 5, 31)], 90, {"customer": (3.5, 2)}),
        ([_row("customer", 1, 30)], 30, {}),
        ([_row("customer", 1, 29.99)], 30, {"customer": (1.0, 1)}),
        ([_row("customer", 4, -1)], 30, {}),
        (
            [_row("executive", 4, 2), _row("customer", 1, 2)],
            30,
            {"customer": (1.0, 1), "executive": (4.0, 1)},
        ),
    ],
)
def test_an_audience_average_counts_only_ratings_inside_its_window(
    rows: list[RatingRow], days: int, expected: dict[str, tuple[float, int]]
) -> None:
    """A rating counts when it was given after ``now - days`` and not after ``now``."""
    found = averages(rows, NOW, days)
    assert {a: (v.average, v.count) for a, v in found.items()} == expected


def test_an_average_reads_as_words_with_its_count() -> None:
    """The review page reads "3.5 of 5 (2 ratings)", and "1 rating" for one."""
    found = averages([_row("customer", 2, 1), _row("customer", 5, 2)], NOW, 30)
    assert found["customer"].words == "3.5 of 5 (2 ratings)"
    assert averages([_row("customer", 2, 1)], NOW, 30)["customer"].words == "2.0 of 5 (1 rating)"


def test_a_stakeholders_history_counts_late_and_missed_promises_per_incident() -> None:
    """A message sent after its promise and its grace is late, a failed one missed, one
    still in its grace is not counted yet; other stakeholders' messages are left out."""
    from dataclasses import replace

    from scheduler.core.history import stakeholder_history
    from scheduler.core.model import Communication, Incident, Kind, Status, ms_of

    base = Communication(
        id="INC-1:acme:update:1", incident_id="INC-1", stakeholder_id="acme", kind=Kind.UPDATE, seq=1,
        status=Status.SENT, recipient="a@acme.example", created_at=NOW, promised_at=NOW - timedelta(hours=3),
        next_update_at=None, sent_at=NOW - timedelta(hours=3), attempts=1, last_error="", subject="",
        message_id="", context={}, message="",
    )  # fmt: skip
    comms = [
        base,
        replace(base, id="INC-1:acme:update:2", seq=2, sent_at=NOW - timedelta(hours=1)),
        replace(base, id="INC-1:acme:update:3", seq=3, status=Status.FAILED, sent_at=None),
        replace(
            base, id="INC-1:acme:update:4", seq=4, status=Status.SCHEDULED, sent_at=None, promised_at=NOW
        ),
        replace(base, id="INC-1:globex:update:1", stakeholder_id="globex"),
    ]
    incident = Incident(id="INC-1", title="Card payments failing", opened_ms=ms_of(NOW - timedelta(hours=4)))
    history = stakeholder_history("acme", "ACME", [incident], comms, {}, NOW, 60.0)
    assert history.promises() == {"kept": 1, "late": 1, "missed": 1}
    assert history.messages == 2
    assert history.incidents[0].kept_rate == pytest.approx(1 / 3)
