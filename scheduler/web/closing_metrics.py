"""``/metrics`` lines for the loop closed after an incident: ratings by audience and value,
and the promised post-incident reviews by outcome."""

from __future__ import annotations

from collections.abc import Mapping

from scheduler.core.review_promise import ReviewOutcome

__all__ = ["ratings_text", "reviews_text"]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def ratings_text(counts: Mapping[tuple[str, int], int]) -> str:
    """Ratings given so far, by the reader's audience and the rating (a counter)."""
    lines = [
        "# HELP amends_feedback_ratings_total Ratings readers gave our messages, by audience and rating.",
        "# TYPE amends_feedback_ratings_total counter",
    ]
    for (audience, rating), count in sorted(counts.items()):
        lines.append(
            f'amends_feedback_ratings_total{{audience="{_label(audience)}",rating="{rating}"}} {count}'
        )
    return "\n".join(lines) + "\n"


def reviews_text(counts: Mapping[ReviewOutcome, int]) -> str:
    """Promised post-incident reviews of the incidents kept, by outcome (a gauge: a pending
    promise becomes kept, late or missed)."""
    lines = [
        "# HELP amends_review_promises Post-incident reviews promised by a resolution, by outcome.",
        "# TYPE amends_review_promises gauge",
        *(
            f'amends_review_promises{{outcome="{outcome}"}} {counts.get(outcome, 0)}'
            for outcome in ReviewOutcome
        ),
    ]
    return "\n".join(lines) + "\n"
