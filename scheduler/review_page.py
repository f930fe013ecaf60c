"""What amends shows people and monitoring: the review page, the pages feedback and
unsubscribe links open, and the ``/metrics`` figures in Prometheus' text format.

Pages are rendered server side with Jinja2, autoescaping on: incident titles, subjects,
errors and comments are data and are always escaped. They load nothing from elsewhere
(inline CSS, no scripts), so the Content-Security-Policy the API sends can forbid it all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import pendulum

from scheduler.feedback import MAX_COMMENT_CHARS, RATINGS, Feedback
from scheduler.logview import ON_TIME_GRACE_S
from scheduler.store import Communication, utc_of

__all__ = [
    "IncidentView",
    "StakeholderView",
    "TimelineRow",
    "UnsubscribeChoice",
    "badge",
    "render_feedback_page",
    "render_notice",
    "render_review",
    "render_sign_in",
    "render_unsubscribe",
    "review_view",
]

_BASE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}amends{% endblock %}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;padding:24px;
color:#1f2328;background:#f6f8fa;line-height:1.45}
main{max-width:1100px;margin:0 auto}
h1{font-size:1.5rem;margin:0 0 4px}h2{font-size:1.2rem;margin:0 0 6px}h3{font-size:1rem;margin:16px 0 6px}
.muted{color:#57606a}.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px;margin:16px 0}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{color:#57606a;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.8rem;font-weight:600;color:#fff}
.kept{background:#1a7f37}.late{background:#bf8700}.failed,.cancelled,.overdue{background:#cf222e}
.pending{background:#6e7781}.open{background:#cf222e}.resolved{background:#1a7f37}
.sev{background:#8250df}
.ratings{border:0;padding:0;margin:0 0 8px}.ratings legend{padding:0;margin-bottom:6px}
.ratings label{display:inline-block;margin:0 6px 6px 0;padding:8px 16px;border:1px solid #0969da;
border-radius:6px;color:#0969da;font-weight:600}
input[type=password]{font:inherit;padding:6px;width:24em;max-width:100%}
textarea{width:100%;box-sizing:border-box;font:inherit;padding:8px}
button{margin-top:8px;padding:8px 16px;font:inherit;border:0;border-radius:6px;background:#1f883d;color:#fff}
blockquote{margin:6px 0;padding:6px 12px;border-left:4px solid #d0d7de;background:#f6f8fa;white-space:pre-wrap}
.thanks{font-weight:600;color:#1a7f37}.error{font-weight:600;color:#cf222e}
</style></head>
<body><main>{% block body %}{% endblock %}</main></body></html>
"""

_REVIEW = """{% extends "base.html" %}
{% block title %}amends: incidents and their communications{% endblock %}
{% block body %}
<h1>Incidents and their communications</h1>
<p class="muted">As of {{ now }}. A promise is kept when its message was sent within
{{ grace_s }} seconds of the time promised; times are in each stakeholder's own zone.</p>
{% for inc in incidents %}
<section class="card incident" id="incident-{{ inc.id }}" data-incident="{{ inc.id }}">
<h2><span class="muted">{{ inc.id }}</span> {{ inc.title }}</h2>
<p><span class="badge sev">{{ inc.severity }}</span> <span class="badge {{ inc.state }}">{{ inc.state }}</span>
status: {{ inc.status }} &middot; opened {{ inc.opened }}{% if inc.resolved %} &middot; resolved {{ inc.resolved }}{% endif %}</p>
{% for s in inc.stakeholders %}
<div class="stakeholder" data-stakeholder="{{ s.id }}">
<h3>{{ s.id }} <span class="muted">({{ s.timezone }})</span>
{% if s.unsubscribed %}<span class="badge cancelled">{{ s.unsubscribed }}</span>{% endif %}</h3>
<table><thead><tr><th>#</th><th>kind</th><th>status</th><th>subject</th><th>promised</th><th>sent</th>
<th>promise</th></tr></thead><tbody>
{% for row in s.rows %}<tr data-comm="{{ row.id }}"><td>{{ row.seq }}</td><td>{{ row.kind }}</td>
<td>{{ row.status }}{% if row.last_error %}<br><span class="muted">{{ row.last_error }}</span>{% endif %}</td>
<td>{{ row.subject or "-" }}</td><td>{{ row.promised }}</td><td>{{ row.sent or "-" }}{% if row.lateness %}
<span class="muted">({{ row.lateness }})</span>{% endif %}</td>
<td><span class="badge {{ row.badge }}">{{ row.badge }}</span></td></tr>
{% endfor %}</tbody></table>
<div class="feedback">{% if s.feedback %}<p>Feedback:
{% if s.feedback.rating %}<span class="rating">rated {{ s.feedback.rating }} of 5</span>{% endif %}</p>
{% if s.feedback.comment %}<blockquote class="comment">{{ s.feedback.comment }}</blockquote>{% endif %}
{% else %}<p class="muted">No feedback yet.</p>{% endif %}</div>
</div>
{% endfor %}
</section>
{% else %}
<p class="card">No incidents yet.</p>
{% endfor %}
{% endblock %}
"""

_FEEDBACK = """{% extends "base.html" %}
{% block title %}How did we keep you informed?{% endblock %}
{% block body %}
<section class="card">
<h1>How did we keep you informed?</h1>
<p class="muted">About {% if title %}&ldquo;{{ title }}&rdquo; ({{ incident_id }}){% else %}{{ incident_id }}{% endif %}.</p>
{% if message %}<p class="thanks">{{ message }}</p>{% endif %}
{% if error %}<p class="error">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">
<input type="hidden" name="sig" value="{{ comment_sig }}">
<fieldset class="ratings"><legend>{% if saved_rating %}You rated our messages {{ saved_rating }} of 5.
Changed your mind? {% endif %}Rate our messages from 1 (poor) to 5 (excellent):</legend>
{% for value in ratings %}<label><input type="radio" name="rating" value="{{ value }}"
{%- if value == rating %} checked{% endif %}> {{ value }}</label>{% endfor %}</fieldset>
<p><label for="comment">Anything you would like us to know? We read every answer.</label></p>
<textarea id="comment" name="comment" rows="6" maxlength="{{ max_chars }}">{{ comment }}</textarea>
<button type="submit">Send</button>
</form>
</section>
{% endblock %}
"""

_NOTICE = """{% extends "base.html" %}
{% block title %}{{ title }}{% endblock %}
{% block body %}<section class="card"><h1>{{ title }}</h1>
{% for line in lines %}<p{% if error %} class="error"{% endif %}>{{ line }}</p>{% endfor %}
{% if button %}<form method="post" action="{{ action }}"><button type="submit">{{ button }}</button></form>{% endif %}
</section>{% endblock %}
"""

_SIGN_IN = """{% extends "base.html" %}
{% block title %}Sign in{% endblock %}
{% block body %}<section class="card"><h1>Sign in</h1>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
<form method="post" action="/signin">
<p><label for="token">The API token or the read-only token (AMENDS_READ_TOKEN):</label></p>
<p><input type="password" id="token" name="token" autocomplete="current-password" required autofocus></p>
<button type="submit">Sign in</button>
</form></section>{% endblock %}
"""

_UNSUBSCRIBE = """{% extends "base.html" %}
{% block title %}{{ heading }}{% endblock %}
{% block body %}<section class="card"><h1>{{ heading }}</h1>
{% for line in lines %}<p>{{ line }}</p>{% endfor %}
{% for choice in choices %}<form method="post" action="{{ action }}">
<input type="hidden" name="scope" value="{{ choice.scope }}">
{% if choice.undo %}<input type="hidden" name="undo" value="1">{% endif %}
<button type="submit" name="choice" value="{{ choice.scope }}">{{ choice.label }}</button></form>
{% endfor %}</section>{% endblock %}
"""

_env = jinja2.Environment(
    loader=jinja2.DictLoader(
        {
            "base.html": _BASE,
            "review.html": _REVIEW,
            "feedback.html": _FEEDBACK,
            "notice.html": _NOTICE,
            "sign_in.html": _SIGN_IN,
            "unsubscribe.html": _UNSUBSCRIBE,
        }
    ),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _local(moment: datetime | None, tz: str) -> str:
    if moment is None:
        return ""
    local = pendulum.instance(moment).in_tz(tz)
    # the year only when it is not this year's, so that old or odd dates are not misread
    return local.format(
        "ddd D MMM HH:mm:ss zz" if local.year == pendulum.now(tz).year else "ddd D MMM YYYY HH:mm:ss zz"
    )


def badge(comm: Communication, now: datetime) -> str:
    """How the communication's promise stands: kept, late, failed, cancelled, overdue or pending."""
    if comm.lateness_s is not None:
        return "kept" if comm.lateness_s <= ON_TIME_GRACE_S else "late"
    if comm.status in ("failed", "cancelled"):
        return comm.status
    if (now - comm.promised_at).total_seconds() > ON_TIME_GRACE_S:
        return "overdue"
    return "pending"


@dataclass(frozen=True)
class TimelineRow:
    id: str
    seq: int
    kind: str
    status: str
    subject: str
    promised: str
    sent: str
    lateness: str
    badge: str
    last_error: str


@dataclass(frozen=True)
class StakeholderView:
    id: str
    timezone: str
    rows: tuple[TimelineRow, ...]
    feedback: Feedback | None
    unsubscribed: str


@dataclass(frozen=True)
class IncidentView:
    id: str
    title: str
    severity: str
    state: str
    status: str
    opened: str
    resolved: str
    stakeholders: tuple[StakeholderView, ...]


def _row(comm: Communication, now: datetime) -> TimelineRow:
    tz = str(comm.context.get("timezone") or "UTC")
    lateness = comm.lateness_s
    return TimelineRow(
        id=comm.id,
        seq=comm.seq,
        kind=comm.kind,
        status=comm.status,
        subject=comm.subject,
        promised=_local(comm.promised_at, tz),
        sent=_local(comm.sent_at, tz),
        lateness=f"{lateness:+.1f}s" if lateness is not None else "",
        badge=badge(comm, now),
        last_error=comm.last_error if comm.status != "sent" else "",
    )


def _opted_out(opted_out: Mapping[str, datetime], stakeholder_id: str, incident_id: str, tz: str) -> str:
    if stakeholder_id in opted_out:
        return f"unsubscribed {_local(opted_out[stakeholder_id], tz)}"
    this_incident = opted_out.get(f"{stakeholder_id}:{incident_id}")
    return f"unsubscribed from this incident {_local(this_incident, tz)}" if this_incident else ""


def review_view(
    incidents: Iterable[Mapping[str, Any]],
    comms: Iterable[Communication],
    feedback: Mapping[str, Mapping[str, Feedback]],
    opted_out: Mapping[str, datetime],
    now: datetime,
) -> list[IncidentView]:
    """Each incident (in the order given) with every stakeholder's timeline and feedback;
    ``opted_out`` maps opt-out ids (``stakeholder`` or ``stakeholder:incident``) to when."""
    threads: dict[str, dict[str, list[Communication]]] = {}
    for comm in comms:
        threads.setdefault(comm.incident_id, {}).setdefault(comm.stakeholder_id, []).append(comm)
    views = []
    for incident in incidents:
        incident_id = str(incident["id"])
        by_stakeholder = threads.get(incident_id, {})
        answers = feedback.get(incident_id, {})
        order = list(dict.fromkeys([*incident.get("stakeholders", []), *by_stakeholder, *answers]))
        stakeholders = []
        for sid in order:
            thread = sorted(by_stakeholder.get(sid, []), key=lambda c: (c.created_at, c.seq))
            tz = str(thread[-1].context.get("timezone") or "UTC") if thread else "UTC"
            stakeholders.append(
                StakeholderView(
                    id=sid,
                    timezone=tz,
                    rows=tuple(_row(c, now) for c in thread),
                    feedback=answers.get(sid),
                    unsubscribed=_opted_out(opted_out, sid, incident_id, tz),
                )
            )
        views.append(
            IncidentView(
                id=incident_id,
                title=str(incident.get("title", "")),
                severity=str(incident.get("severity", "")),
                state=str(incident.get("state", "")),
                status=str(incident.get("status", "")),
                opened=_local(utc_of(incident.get("opened_ms")), "UTC"),
                resolved=_local(utc_of(incident.get("resolved_ms")), "UTC"),
                stakeholders=tuple(stakeholders),
            )
        )
    return views


def render_review(incidents: list[IncidentView], now: datetime) -> str:
    return _env.get_template("review.html").render(
        incidents=incidents, now=_local(now, "UTC"), grace_s=int(ON_TIME_GRACE_S)
    )


def render_feedback_page(
    *,
    incident_id: str,
    title: str,
    action: str,
    comment_sig: str,
    rating: int | None = None,
    saved_rating: int | None = None,
    comment: str = "",
    message: str = "",
    error: str = "",
) -> str:
    """The page a feedback link opens: a form with the ratings (``rating`` chosen) and a
    comment. Opening it records nothing; sending the form does."""
    return _env.get_template("feedback.html").render(
        incident_id=incident_id,
        title=title,
        ratings=RATINGS,
        action=action,
        comment_sig=comment_sig,
        rating=rating,
        saved_rating=saved_rating,
        comment=comment,
        message=message,
        error=error,
        max_chars=MAX_COMMENT_CHARS,
    )


def render_notice(title: str, *lines: str, error: bool = False, button: str = "", action: str = "") -> str:
    """A short page: a confirmation, why a link did not work, or a question with one button."""
    return _env.get_template("notice.html").render(
        title=title, lines=lines, error=error, button=button, action=action
    )


def render_sign_in(error: str = "") -> str:
    """The review page's sign-in form; it posts the token, so the token never enters a URL."""
    return _env.get_template("sign_in.html").render(error=error)


@dataclass(frozen=True)
class UnsubscribeChoice:
    scope: str
    """``incident`` or ``all``."""
    label: str
    undo: bool = False


def render_unsubscribe(
    heading: str, lines: Iterable[str], action: str, choices: Iterable[UnsubscribeChoice]
) -> str:
    """The unsubscribe page: what the reader may stop (or restart), one button each."""
    return _env.get_template("unsubscribe.html").render(
        heading=heading, lines=list(lines), action=action, choices=list(choices)
    )
