"""What amends shows people and monitoring: the review page, the pages feedback and
unsubscribe links open, and the ``/metrics`` figures in Prometheus' text format.

Pages are rendered server side with Jinja2, autoescaping on: incident titles, subjects,
errors and comments are data and are always escaped. They load nothing from elsewhere
(inline CSS, no scripts), so the Content-Security-Policy the API sends can forbid it all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import jinja2
import pendulum
from markupsafe import Markup

from scheduler.core.durations import TimeWindow
from scheduler.core.feedback import MAX_COMMENT_CHARS, RATINGS, Feedback
from scheduler.core.model import Communication, utc_of
from scheduler.core.promises import ON_TIME_GRACE_S
from scheduler.mail.render import local_time
from scheduler.web.timeline_svg import Lane, Mark, timeline_svg

__all__ = [
    "IncidentView",
    "StakeholderView",
    "TimelineRow",
    "UnsubscribeChoice",
    "badge",
    "message_href",
    "promise_words",
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
.wrap{overflow-wrap:anywhere;word-break:break-word}td.err{max-width:28em}
.promise-pending{margin:4px 0 8px}.timeline{width:100%;max-width:640px;height:auto;margin:4px 0 8px}
.legend{font-size:.8rem}.legend svg{vertical-align:middle}
a{color:#0969da}abbr{text-decoration:none;cursor:help}
@media (max-width:640px){body{padding:8px}.card{padding:10px}
table.log,table.log tbody,table.log tr,table.log td{display:block;width:auto}
table.log thead{display:none}table.log tr{border-bottom:1px solid #d0d7de;padding:6px 0}
table.log td{border:0;padding:2px 4px}table.log td::before{content:attr(data-label) ": ";color:#57606a;font-weight:600}
td.err{max-width:none}input[type=password]{width:100%}}
</style></head>
<body><main>{% block body %}{% endblock %}</main></body></html>
"""

_REVIEW = """{% extends "base.html" %}
{% block title %}amends: incidents and their communications{% endblock %}
{% block body %}
<h1>Incidents and their communications</h1>
<p class="muted">As of {{ now }}. A promise is kept when its message was sent within
{{ grace_s }} seconds of the time promised; times are in each stakeholder's own zone.
In each picture, a ring is a time promised and a dot the time sent (green kept, amber late),
a red cross a message that failed, a dashed ring the next promise.</p>
{% for inc in incidents %}
<section class="card incident" id="incident-{{ inc.id }}" data-incident="{{ inc.id }}">
<h2><span class="muted">{{ inc.id }}</span> {{ inc.title }}</h2>
<p><span class="badge sev">{{ inc.severity }}</span> <span class="badge {{ inc.state }}">{{ inc.state }}</span>
status: {{ inc.status }} &middot; opened {{ inc.opened }}{% if inc.resolved %} &middot; resolved {{ inc.resolved }}{% endif %}</p>
{% if inc.svg %}<figure class="picture" style="margin:0">{{ inc.svg }}</figure>{% endif %}
{% for s in inc.stakeholders %}
<div class="stakeholder" data-stakeholder="{{ s.id }}">
<h3><abbr class="name" title="{{ s.id }}">{{ s.name }}</abbr> <span class="muted">({{ s.timezone }}{% if s.via %}, via {{ s.via }}{% endif %})</span>
{% if s.unsubscribed %}<span class="badge cancelled">{{ s.unsubscribed }}</span>{% endif %}</h3>
{% if s.pending %}<p class="promise-pending"><span class="badge pending">promised</span> {{ s.pending }}</p>{% endif %}
<table class="log"><thead><tr><th>#</th><th>kind</th><th>status</th><th>subject</th><th>promised</th><th>sent</th>
<th>promise</th></tr></thead><tbody>
{% for row in s.rows %}<tr data-comm="{{ row.id }}"><td data-label="#">{{ row.seq }}</td><td data-label="kind">{{ row.kind }}</td>
<td data-label="status" class="err wrap">{{ row.status }}{% if row.last_error %}<br><span class="muted">{{ row.last_error }}</span>{% endif %}</td>
<td data-label="subject" class="wrap">{% if row.href %}<a href="{{ row.href }}">{{ row.subject or "(the message)" }}</a>{% else %}{{ row.subject or "-" }}{% endif %}</td>
<td data-label="promised">{{ row.promised }}</td><td data-label="sent">{{ row.sent or "-" }}{% if row.lateness %}
<span class="muted">({{ row.lateness }})</span>{% endif %}</td>
<td data-label="promise"><span class="badge {{ row.badge }}">{{ row.badge }}</span></td></tr>
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
{% if older %}<p><a class="older" href="{{ older }}">Older incidents &rarr;</a></p>{% endif %}
{% endblock %}
"""

_FEEDBACK = """{% extends "base.html" %}
{% block title %}How did we keep you informed?{% endblock %}
{% block body %}
<section class="card">
<h1>How did we keep you informed?</h1>
<p class="muted">{% if stakeholder %}For {{ stakeholder }}, about{% else %}About{% endif %} {% if title %}&ldquo;{{ title }}&rdquo; ({{ incident_id }}){% else %}{{ incident_id }}{% endif %}.</p>
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


def badge(comm: Communication, now: datetime, grace_s: float = ON_TIME_GRACE_S) -> str:
    """How the communication's promise stands: kept, late, failed, cancelled, overdue or pending."""
    if comm.lateness_s is not None:
        return "kept" if comm.lateness_s <= grace_s else "late"
    if comm.status in ("failed", "cancelled"):
        return comm.status
    if (now - comm.promised_at).total_seconds() > grace_s:
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
    href: str = ""
    """Where the message as sent (or as composed) can be read."""


@dataclass(frozen=True)
class StakeholderView:
    id: str
    timezone: str
    rows: tuple[TimelineRow, ...]
    feedback: Feedback | None
    unsubscribed: str
    name: str = ""
    pending: str = ""
    """The promise still to be kept, in words: "update held until 07:00 CET by quiet hours"."""
    via: str = ""
    """Where its messages go: an email address, or the channel and host (``slack:hooks.slack.com``)."""


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
    svg: Markup = field(default_factory=lambda: Markup(""))
    """The incident's timeline picture (inline SVG, built from escaped text)."""


def message_href(comm_id: str) -> str:
    """The review page's link to one communication's message."""
    return f"/review/messages/{quote(comm_id, safe='')}"


def _row(comm: Communication, now: datetime, grace_s: float) -> TimelineRow:
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
        badge=badge(comm, now, grace_s),
        last_error=comm.last_error if comm.status != "sent" else "",
        href=message_href(comm.id) if comm.message or comm.status == "failed" else "",
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
    *,
    names: Mapping[str, str] | None = None,
    pending: Mapping[tuple[str, str], tuple[datetime, str]] | None = None,
    grace_s: float = ON_TIME_GRACE_S,
) -> list[IncidentView]:
    """Each incident (in the order given) with every stakeholder's timeline and feedback;
    ``opted_out`` maps opt-out ids (``stakeholder`` or ``stakeholder:incident``) to when,
    ``names`` stakeholder ids to names, and ``pending`` (incident, stakeholder) to the
    promise not composed yet: its due time and its words."""
    names = names or {}
    pending = pending or {}
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
        lanes: list[Lane] = []
        for sid in order:
            thread = sorted(by_stakeholder.get(sid, []), key=lambda c: (c.created_at, c.seq))
            tz = str(thread[-1].context.get("timezone") or "UTC") if thread else "UTC"
            stakeholders.append(
                StakeholderView(
                    id=sid,
                    timezone=tz,
                    rows=tuple(_row(c, now, grace_s) for c in thread),
                    feedback=answers.get(sid),
                    unsubscribed=_opted_out(opted_out, sid, incident_id, tz),
                    name=names.get(sid, sid),
                    pending=pending.get((incident_id, sid), (now, ""))[1],
                    via=thread[-1].recipient if thread else "",
                )
            )
            lanes.append(_lane(names.get(sid, sid), thread, now, pending.get((incident_id, sid)), grace_s))
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
                svg=_picture(incident, lanes, now),
            )
        )
    return views


def _lane(
    name: str,
    thread: list[Communication],
    now: datetime,
    upcoming: tuple[datetime, str] | None,
    grace_s: float,
) -> Lane:
    marks = tuple(
        Mark(
            label=f"{c.kind} #{c.seq}: {badge(c, now, grace_s)}"
            + (f", sent {c.lateness_s:+.0f}s from the promise" if c.lateness_s is not None else ""),
            promised=c.promised_at,
            sent=c.sent_at,
            badge=badge(c, now, grace_s),
        )
        for c in thread
    )
    return Lane(name, marks, upcoming[0] if upcoming else None)


def _picture(incident: Mapping[str, Any], lanes: list[Lane], now: datetime) -> Markup:
    moments = [m.promised for lane in lanes for m in lane.marks]
    moments += [m.sent for lane in lanes for m in lane.marks if m.sent is not None]
    moments += [lane.upcoming for lane in lanes if lane.upcoming is not None]
    if not moments:
        return Markup("")
    start = utc_of(incident.get("opened_ms")) or min(moments)
    end = max([*moments, min(now, max(moments))])
    caption = f"Timeline of {incident.get('id', '')}: each stakeholder's messages, promised against sent"
    # every text in the SVG is escaped by timeline_svg
    return Markup(timeline_svg(lanes, min(start, *moments), end, caption))


def promise_words(
    kind: str,
    due: datetime,
    now: datetime,
    *,
    timezone: str,
    quiet_hours: TimeWindow | None = None,
    business_hours: TimeWindow | None = None,
    grace_s: float = ON_TIME_GRACE_S,
) -> str:
    """A promise not yet kept, in words: "update held until 07:00 CET by quiet hours",
    "next update by 14:30 CET", "feedback request at Mon 30 Nov, 09:00 CET (business hours)"."""
    when = local_time(due, timezone, now)
    local = pendulum.instance(due).in_tz(timezone)
    on_the_minute = local.second == 0 and local.microsecond == 0
    clock = local.time().replace(second=0, microsecond=0)
    if (now - due).total_seconds() > grace_s:
        what = "update" if kind == "update" else "feedback request"
        return f"{what} promised by {when} is overdue"
    if kind == "update":
        if quiet_hours is not None and on_the_minute and clock == quiet_hours.end:
            return f"update held until {when} by quiet hours"
        return f"next update by {when}"
    if business_hours is not None and on_the_minute and clock == business_hours.start:
        return f"feedback request at {when}, when business hours begin"
    return f"feedback request at {when}"


def render_review(
    incidents: list[IncidentView], now: datetime, grace_s: float = ON_TIME_GRACE_S, older: str = ""
) -> str:
    """The review page; ``older`` links to the next page of older incidents, if any."""
    return _env.get_template("review.html").render(
        incidents=incidents, now=_local(now, "UTC"), grace_s=int(grace_s), older=older
    )


def render_feedback_page(
    *,
    incident_id: str,
    title: str,
    action: str,
    stakeholder: str = "",
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
        stakeholder=stakeholder,
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
