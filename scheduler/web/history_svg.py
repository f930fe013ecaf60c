"""A stakeholder's history as two small pictures: the share of promises kept in each
incident, and each rating they gave, in time order.

Inline SVG built on the server from escaped text (no script, no external resource), as
the incident timeline is; every bar and dot carries a ``<title>`` shown on hover.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

__all__ = ["Point", "bars_svg", "dots_svg"]

_WIDTH, _HEIGHT = 480, 150
_LEFT, _RIGHT, _TOP, _BOTTOM = 36, 12, 12, 28
"""The picture's size and its margins (the left one holds the scale)."""
_KEPT, _LATE = "#1a7f37", "#bf8700"

Point = tuple[str, float, str]
"""(label under the mark, value, words for its hover title)."""


def _x(index: int, count: int) -> float:
    span = _WIDTH - _LEFT - _RIGHT
    return _LEFT + span * (index + 0.5) / max(count, 1)


def _y(value: float, top_value: float) -> float:
    return _TOP + (_HEIGHT - _TOP - _BOTTOM) * (1 - value / top_value)


def _frame(title: str, ticks: Sequence[tuple[float, str]], top_value: float, marks: list[str]) -> Markup:
    lines = [
        f'<svg class="history" role="img" viewBox="0 0 {_WIDTH} {_HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for value, label in ticks:
        y = _y(value, top_value)
        lines.append(
            f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>'
        )
        lines.append(
            f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#57606a">{escape(label)}</text>'
        )
    return Markup("\n".join([*lines, *marks, "</svg>"]))  # every text above is escaped


def bars_svg(points: Sequence[Point]) -> Markup:
    """One bar per incident: the share of its promises kept (0 to 1)."""
    marks = []
    width = max(6.0, min(40.0, (_WIDTH - _LEFT - _RIGHT) / max(len(points), 1) * 0.6))
    for index, (label, value, words) in enumerate(points):
        x, y = _x(index, len(points)), _y(value, 1.0)
        colour = _KEPT if value >= 1.0 else _LATE
        marks.append(
            f'<rect class="kept-rate" x="{x - width / 2:.1f}" y="{y:.1f}" width="{width:.1f}" '
            f'height="{_HEIGHT - _BOTTOM - y:.1f}" fill="{colour}"><title>{escape(words)}</title></rect>'
        )
        marks.append(_label(x, label))
    return _frame(
        "Share of promises kept, per incident", [(0, "0%"), (0.5, "50%"), (1.0, "100%")], 1.0, marks
    )


def dots_svg(points: Sequence[Point]) -> Markup:
    """One dot per rating (1 to 5), joined in time order."""
    coords = [(_x(i, len(points)), _y(value, 5.0)) for i, (_, value, _) in enumerate(points)]
    marks = []
    if len(coords) > 1:
        path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(coords))
        marks.append(f'<path d="{path}" fill="none" stroke="#0969da" stroke-width="1.5"/>')
    for (x, y), (label, _, words) in zip(coords, points, strict=True):
        marks.append(
            f'<circle class="rating" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#0969da"><title>{escape(words)}</title></circle>'
        )
        marks.append(_label(x, label))
    return _frame("Ratings over time", [(1, "1"), (3, "3"), (5, "5")], 5.0, marks)


def _label(x: float, text: str) -> str:
    return (
        f'<text x="{x:.1f}" y="{_HEIGHT - 10}" text-anchor="middle" font-size="10" fill="#57606a">'
        f"{escape(text)}</text>"
    )
