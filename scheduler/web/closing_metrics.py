"""``/metrics`` lines for the loop closed after an incident: ratings by audience and value."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ratings_text"]


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
