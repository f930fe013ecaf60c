"""The review page ``/``: incidents with every stakeholder's timeline, and each message as sent.

It takes a reader's bearer token or the session :mod:`scheduler.web.auth`'s sign-in form
starts; without either it answers the sign-in form (401). A token given as ``/?token=`` is
never used: the page redirects to ``/`` so that it leaves the address bar. A message shown
to the read token has its action links' signatures withheld: reading the log must not
give the power to unsubscribe, rate or change preferences as a stakeholder.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from scheduler.core.config import Config
from scheduler.core.model import Incident
from scheduler.core.ports import Store, format_cursor, parse_cursor
from scheduler.core.promises import open_promises
from scheduler.core.text import scrub
from scheduler.mail.composed import composed_text
from scheduler.mail.signing import withhold_signatures
from scheduler.service.waiting import waiting_events
from scheduler.storage.bounces import RedisBounceList
from scheduler.storage.ratings import RatingsLog
from scheduler.web._http import HTML_HEADERS, page
from scheduler.web.auth import caller_role, sign_in_page, sign_out_csrf
from scheduler.web.closing_view import rating_averages, review_badges
from scheduler.web.deps import WebDep, grace_s
from scheduler.web.pages import render_review
from scheduler.web.review_view import promise_words, review_view
from scheduler.web.sessions import Role

__all__ = ["REVIEW_PAGE", "router"]

REVIEW_PAGE = 10
REVIEW_BOUNCES = 50
"""How many of the newest undeliverable addresses the review page lists."""
"""Incidents on one page of the review page: with ten stakeholders each, a page of 10
answers in well under 100 ms however long the history (``bench/bench_scale.py``)."""

router = APIRouter()


def _stakeholder_ids(states: list[Incident]) -> set[str]:
    return {sid for state in states for sid in state.stakeholders}


def _pending(
    config: Config | None, store: Store, states: list[Incident], now: datetime
) -> dict[tuple[str, str], tuple[datetime, str]]:
    """Each thread's promise not composed yet, with its words for the review page."""
    found: dict[tuple[str, str], tuple[datetime, str]] = {}
    severity = {s.id: s.severity for s in states}
    for promise in open_promises(store, among=[s.id for s in states]):
        stakeholder = config.stakeholder(promise.stakeholder_id) if config else None
        tz = config.timezone_of(stakeholder) if config and stakeholder else "UTC"
        quiet = config.quiet_hours_of(stakeholder) if config and stakeholder else None
        if (
            config
            and stakeholder
            and config.overrides_quiet_hours(stakeholder, severity.get(promise.incident_id, ""))
        ):
            quiet = None
        words = promise_words(
            promise.kind,
            promise.due,
            now,
            timezone=tz,
            quiet_hours=quiet,
            business_hours=config.business_hours if config else None,
            grace_s=grace_s(config),
        )
        found[(promise.incident_id, promise.stakeholder_id)] = (promise.due, words)
    return found


@router.get("/", response_class=HTMLResponse)
def review(request: Request, web: WebDep, before: str | None = None) -> Response:
    """The incidents, newest first, 10 a page, each with every stakeholder's timeline and
    feedback; ``?before=`` (the page's "older incidents" link) continues after a page."""
    if any(name.lower() == "token" for name in request.query_params):
        # a token in an address stays in history and logs: it is never used, and leaves
        return RedirectResponse("/", status_code=303)
    if caller_role(request, web, cookie=True) is None:
        return sign_in_page(web)
    now = web.clock()
    try:
        after = parse_cursor(before) if before else None
    except ValueError:
        return RedirectResponse("/", status_code=303)
    store = web.store
    ids, following = store.incident_page(REVIEW_PAGE, after)
    states = store.incidents(ids)
    view = review_view(
        [s.to_json() for s in states],
        store.incident_comms(*ids),
        {i: store.feedback_for(i) for i in ids},
        {o.id: o.since for o in store.opt_outs()},
        now,
        names={sid: name for sid in _stakeholder_ids(states) if (name := web.name(sid))},
        pending=_pending(web.config(), store, states, now),
        grace_s=web.grace_s(),
    )
    older = f"/?before={quote(format_cursor(following), safe='')}" if following else ""
    bounces = RedisBounceList(web.client)
    return page(
        render_review(
            view,
            now,
            web.grace_s(),
            older,
            sign_out_csrf(request, web),
            waiting=waiting_events(web.client),
            undeliverable=[m.as_json() for m in bounces.newest(REVIEW_BOUNCES)],
            undeliverable_count=bounces.count(),
            ratings=rating_averages(RatingsLog(web.client), now),
            reviews=review_badges(states, now, web.config(), web.grace_s()),
        )
    )


@router.get("/review/messages/{comm_id}", response_class=PlainTextResponse)
def review_message(request: Request, comm_id: str, web: WebDep) -> Response:
    """One message as sent (headers included) for the review page; a message that could
    not be sent shows what was composed, marked as such. The read token sees its action
    links with their signatures withheld."""
    role = caller_role(request, web, cookie=True)
    if role is None:
        return sign_in_page(web)
    comm = web.store.comm(comm_id)
    if comm is None:
        return PlainTextResponse(f"no communication {comm_id!r}", status_code=404)
    text = comm.message or composed_text(comm, web.config(), web.settings.templates_dir, web.secret)
    shown = text if role is Role.WRITE else withhold_signatures(text)
    return PlainTextResponse(scrub(shown), headers=HTML_HEADERS)
