"""One incident's communications as a picture: a lane per stakeholder, promised against sent.

Rendered on the server as inline SVG (no script, no external resource), so the review
page's Content-Security-Policy stays as strict as before. Every mark carries a
``<title>``, which browsers show on hover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

__all__ = ["Lane", "Mark", "timeline_svg"]

_WIDTH = 480
_LEFT = 118
_RIGHT = 16
_LANE_H = 28
_TOP = 22
_COLOURS = {
    "kept": "#1a7f37",
    "late": "#bf8700",
    "failed": "#cf222e",
    "overdue": "#cf222e",
    "cancelled": "#8c959f",
    "suppressed": "#8c959f",
    "pending": "#6e7781",
}


@dataclass(frozen=True)
class Mark:
    """One communication: when it was promised, when (if) it was sent, and how that stands."""

    label: str
    promised: datetime
    sent: datetime | None
    badge: str


@dataclass(frozen=True)
class Lane:
    name: str
    marks: tuple[Mark, ...]
    upcoming: datetime | None = None
    """A promise not composed yet (the next update or feedback request)."""


def _clip(text: str, limit: int = 16) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_CHAR_PX = 7.6
"""About the width of one character at font-size 13 in a sans-serif font."""


def _fit(label: str) -> str:
    room = _LEFT - 16
    return f' textLength="{room}" lengthAdjust="spacingAndGlyphs"' if len(label) * _CHAR_PX > room else ""


def timeline_svg(lanes: Sequence[Lane], start: datetime, end: datetime, caption: str) -> str:
    """An SVG with one lane per stakeholder between ``start`` and ``end``.

    A hollow ring is the time promised, a filled dot the time sent, joined by a line when
    they differ; a cross is a message that failed, a grey dot one withdrawn, a dashed ring
    a promise still to come.
    """
    span_s = max((end - start).total_seconds(), 60.0)
    plot = _WIDTH - _LEFT - _RIGHT

    def x(moment: datetime) -> float:
        offset = (moment - start).total_seconds() / span_s
        return round(_LEFT + plot * min(max(offset, 0.0), 1.0), 1)

    height = _TOP + _LANE_H * max(len(lanes), 1) + 8
    out = [
        f'<svg class="timeline" role="img" viewBox="0 0 {_WIDTH} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(caption)}</title>",
        f'<line x1="{_LEFT}" y1="{_TOP - 8}" x2="{_WIDTH - _RIGHT}" y2="{_TOP - 8}" stroke="#d0d7de"/>',
    ]
    for n, lane in enumerate(lanes):
        y = _TOP + _LANE_H * n + _LANE_H // 2
        out.append(
            # a long name is clipped and, whatever the font, squeezed to end before the lane
            f'<text x="4" y="{y + 4}" font-size="13" fill="#1f2328"{_fit(_clip(lane.name))}>'
            f"{escape(_clip(lane.name))}<title>{escape(lane.name)}</title></text>"
        )
        out.append(f'<line x1="{_LEFT}" y1="{y}" x2="{_WIDTH - _RIGHT}" y2="{y}" stroke="#eaeef2"/>')
        for mark in lane.marks:
            colour = _COLOURS.get(mark.badge, "#6e7781")
            tip = f"<title>{escape(mark.label)}</title>"
            px = x(mark.promised)
            if mark.sent is not None:
                sx = x(mark.sent)
                if abs(sx - px) >= 1:
                    out.append(
                        f'<line x1="{px}" y1="{y}" x2="{sx}" y2="{y}" stroke="{colour}" stroke-width="3"/>'
                    )
                out.append(
                    f'<circle class="promised" cx="{px}" cy="{y}" r="6" fill="none" stroke="{colour}"/>'
                )
                out.append(
                    f'<circle class="sent {mark.badge}" cx="{sx}" cy="{y}" r="4" fill="{colour}">{tip}</circle>'
                )
            elif mark.badge in ("failed", "overdue"):
                out.append(
                    f'<path class="{mark.badge}" d="M{px - 5} {y - 5}L{px + 5} {y + 5}M{px - 5} {y + 5}L{px + 5} {y - 5}" '
                    f'stroke="{colour}" stroke-width="3">{tip}</path>'
                )
            else:
                out.append(
                    f'<circle class="{mark.badge}" cx="{px}" cy="{y}" r="4" fill="{colour}" opacity="0.6">{tip}</circle>'
                )
        if lane.upcoming is not None:
            ux = x(lane.upcoming)
            out.append(
                f'<circle class="upcoming" cx="{ux}" cy="{y}" r="6" fill="none" stroke="#6e7781" '
                f'stroke-dasharray="2 2"><title>next promise</title></circle>'
            )
    out.append("</svg>")
    return "".join(out)
